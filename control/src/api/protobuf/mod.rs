//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the JSON form
//! the rest of the server works on. kubectl's typed commands (`create deployment`, `create
//! configmap`, `drain`'s evictions, …) send them.
//!
//! The envelope is the 4-byte magic `k8s\0` and a `runtime.Unknown` message naming the apiVersion
//! and kind and carrying the object's bytes. Objects are decoded generically from `schema.txt`
//! (field numbers, JSON names and wire types; see `generate.py`). Go writes every non-pointer
//! field, so zero values are dropped as JSON's `omitempty` would — except for the pointer fields
//! in [`KEEP_ZERO`], whose zero is a choice (`replicas: 0`, `runAsUser: 0`, `ready: false`).

mod wire;

use std::{collections::HashMap, sync::LazyLock};

use serde_json::{Map, Value, json};

use super::status::ApiError;
use wire::{Reader, WireValue};

/// The Content-Type of a protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Fields whose zero value (0, false, "0") is meaningful: Go pointers, written only when set.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "deletionGracePeriodSeconds",
    "gracePeriodSeconds",
    "automountServiceAccountToken",
    "immutable",
    "enableServiceLinks",
    "shareProcessNamespace",
    "hostUsers",
    "allowPrivilegeEscalation",
    "privileged",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "defaultMode",
    "mode",
    "optional",
    "ready",
    "serving",
    "terminating",
    "allocateLoadBalancerNodePorts",
    "orphanDependents",
    "leaseDurationSeconds",
    "leaseTransitions",
    "maxSurge",
    "maxUnavailable",
    "partition",
    "priority",
    "controller",
    "blockOwnerDeletion",
    "expirationSeconds",
];

#[derive(Debug)]
enum Kind {
    String,
    Int32,
    Int64,
    Bool,
    Bytes,
    Message(String),
}

#[derive(Debug, PartialEq)]
enum Label {
    Single,
    Repeated,
    Map,
    Inline,
}

#[derive(Debug)]
struct Field {
    name: String,
    label: Label,
    kind: Kind,
}

type Schema = HashMap<String, HashMap<u64, Field>>;

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse_schema(include_str!("schema.txt")));

fn parse_schema(text: &str) -> Schema {
    let mut schema = Schema::new();
    let mut current: Option<String> = None;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        if let Some(name) = line.strip_prefix("message ") {
            current = Some(name.to_owned());
            schema.entry(name.to_owned()).or_default();
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (Some(message), [number, name, rest @ ..]) = (&current, parts.as_slice()) else { continue };
        let (label, kind) = match rest {
            [kind] => (Label::Single, *kind),
            ["repeated", kind] => (Label::Repeated, *kind),
            ["map", kind] => (Label::Map, *kind),
            ["inline", kind] => (Label::Inline, *kind),
            _ => continue,
        };
        let kind = match kind {
            "string" => Kind::String,
            "int32" => Kind::Int32,
            "int64" => Kind::Int64,
            "bool" => Kind::Bool,
            "bytes" => Kind::Bytes,
            other => Kind::Message(other.to_owned()),
        };
        let Ok(number) = number.parse() else { continue };
        if let Some(fields) = schema.get_mut(message) {
            fields.insert(number, Field { name: (*name).to_owned(), label, kind });
        }
    }
    schema
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(format!("the protobuf body is malformed: {}", message.into()))
}

/// The message of `kind` in `api_version` ("v1", "apps/v1", "discovery.k8s.io/v1", …).
fn root_message(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("core", api_version));
    // k8s.io groups are named by their first label (api.rbac.v1 for rbac.authorization.k8s.io).
    let group = if group.ends_with(".k8s.io") { group.split('.').next().unwrap_or(group) } else { group };
    if group == "meta" || (kind == "DeleteOptions" && group == "core") {
        return format!("apimachinery.pkg.apis.meta.{version}.{kind}");
    }
    format!("api.{group}.{version}.{kind}")
}

/// Decodes a protobuf request body into its JSON form (with apiVersion and kind).
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| bad("no k8s protobuf magic"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut reader = Reader::new(envelope);
    while let Some((number, value)) = reader.next().map_err(bad)? {
        match (number, value) {
            (1, WireValue::Bytes(type_meta)) => {
                let mut meta = Reader::new(type_meta);
                while let Some((n, v)) = meta.next().map_err(bad)? {
                    match (n, v) {
                        (1, WireValue::Bytes(b)) => api_version = utf8(b)?,
                        (2, WireValue::Bytes(b)) => kind = utf8(b)?,
                        _ => {}
                    }
                }
            }
            (2, WireValue::Bytes(bytes)) => raw = bytes,
            (3, WireValue::Bytes(encoding)) if !encoding.is_empty() => {
                return Err(ApiError::unsupported_media_type(&format!(
                    "{MEDIA_TYPE} with {}",
                    utf8(encoding)?
                )));
            }
            _ => {}
        }
    }
    if kind.is_empty() {
        return Err(bad("the envelope names no kind"));
    }
    let message = root_message(&api_version, &kind);
    if !SCHEMA.contains_key(&message) {
        return Err(ApiError::unsupported_media_type(&format!("{MEDIA_TYPE} for {api_version} {kind}")));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    decode_into(&message, raw, &mut object)?;
    Ok(Value::Object(object))
}

fn utf8(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string is not UTF-8"))
}

/// Decodes one message's fields into `object`.
fn decode_into(message: &str, bytes: &[u8], object: &mut Map<String, Value>) -> Result<(), ApiError> {
    let fields = SCHEMA.get(message).ok_or_else(|| bad(format!("unknown message {message}")))?;
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next().map_err(bad)? {
        let field = fields.get(&number).ok_or_else(|| {
            ApiError::bad_request(format!("protobuf field {number} of {message} is not known to this server"))
        })?;
        match field.label {
            Label::Inline => {
                let Kind::Message(inner) = &field.kind else { continue };
                let WireValue::Bytes(b) = value else {
                    return Err(bad(format!("{} is not a message", field.name)));
                };
                decode_into(inner, b, object)?;
            }
            Label::Single => {
                let v = scalar_or_message(&field.kind, &field.name, value)?;
                object.insert(field.name.clone(), v);
            }
            Label::Repeated => {
                let list = object.entry(field.name.clone()).or_insert_with(|| json!([]));
                let Value::Array(items) = list else { continue };
                match (&field.kind, value) {
                    // Packed numbers (Go writes them unpacked, but either is valid protobuf).
                    (Kind::Int32 | Kind::Int64, WireValue::Bytes(b)) => {
                        let mut packed = Reader::new(b);
                        while let Some(n) = packed.varint_opt().map_err(bad)? {
                            items.push(int(&field.kind, n));
                        }
                    }
                    (kind, value) => items.push(scalar_or_message(kind, &field.name, value)?),
                }
            }
            Label::Map => {
                let WireValue::Bytes(entry) = value else { return Err(bad(format!("{} entry", field.name))) };
                let (mut key, mut val) = (String::new(), None);
                let mut r = Reader::new(entry);
                while let Some((n, v)) = r.next().map_err(bad)? {
                    match (n, v) {
                        (1, WireValue::Bytes(b)) => key = utf8(b)?,
                        (2, v) => val = Some(scalar_or_message(&field.kind, &field.name, v)?),
                        _ => {}
                    }
                }
                let value = match (val, &field.kind) {
                    (Some(v), _) => v,
                    (None, Kind::Bytes | Kind::String) => json!(""),
                    (None, _) => json!({}),
                };
                let map = object.entry(field.name.clone()).or_insert_with(|| json!({}));
                map[key] = value;
            }
        }
    }
    // Go writes every non-pointer field; JSON would have omitted the empty ones.
    object.retain(|name, value| match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty() || KEEP_ZERO.contains(&name.as_str()),
        Value::Bool(b) => *b || KEEP_ZERO.contains(&name.as_str()),
        Value::Number(n) => n.as_i64() != Some(0) || KEEP_ZERO.contains(&name.as_str()),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    });
    Ok(())
}

fn int(kind: &Kind, raw: u64) -> Value {
    match kind {
        // int32 is sign-extended to 64 bits on the wire.
        Kind::Int32 => json!(raw as i64 as i32),
        _ => json!(raw as i64),
    }
}

fn scalar_or_message(kind: &Kind, name: &str, value: WireValue<'_>) -> Result<Value, ApiError> {
    match (kind, value) {
        (Kind::String, WireValue::Bytes(b)) => Ok(json!(utf8(b)?)),
        (Kind::Bytes, WireValue::Bytes(b)) => Ok(json!(base64(b))),
        (Kind::Int32 | Kind::Int64, WireValue::Varint(n)) => Ok(int(kind, n)),
        (Kind::Bool, WireValue::Varint(n)) => Ok(json!(n != 0)),
        (Kind::Message(message), WireValue::Bytes(b)) => special(message, b).unwrap_or_else(|| {
            let mut object = Map::new();
            decode_into(message, b, &mut object)?;
            Ok(Value::Object(object))
        }),
        _ => Err(bad(format!("field {name} has the wrong wire type"))),
    }
}

/// Messages whose JSON form is not an object of their fields.
fn special(message: &str, bytes: &[u8]) -> Option<Result<Value, ApiError>> {
    let short = message.rsplit('.').next().unwrap_or(message);
    let known = matches!(
        message,
        "apimachinery.pkg.apis.meta.v1.Time"
            | "apimachinery.pkg.apis.meta.v1.MicroTime"
            | "apimachinery.pkg.apis.meta.v1.Duration"
            | "apimachinery.pkg.api.resource.Quantity"
            | "apimachinery.pkg.util.intstr.IntOrString"
            | "apimachinery.pkg.runtime.RawExtension"
            | "apimachinery.pkg.apis.meta.v1.FieldsV1"
    );
    if !known {
        return None;
    }
    Some(special_value(short, bytes))
}

fn special_value(short: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let mut ints: HashMap<u64, u64> = HashMap::new();
    let mut blobs: HashMap<u64, &[u8]> = HashMap::new();
    let mut reader = Reader::new(bytes);
    while let Some((n, v)) = reader.next().map_err(bad)? {
        match v {
            WireValue::Varint(x) => {
                ints.insert(n, x);
            }
            WireValue::Bytes(b) => {
                blobs.insert(n, b);
            }
            WireValue::Fixed => {}
        }
    }
    let int = |n| ints.get(&n).copied().unwrap_or(0);
    let blob = |n| blobs.get(&n).copied().unwrap_or(&[]);
    Ok(match short {
        "Time" | "MicroTime" => {
            let (seconds, nanos) = (int(1) as i64, int(2) as i64 as i32);
            if seconds == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let t = jiff::Timestamp::new(seconds, nanos).map_err(|e| bad(e.to_string()))?;
            let format = if short == "Time" { "%Y-%m-%dT%H:%M:%SZ" } else { "%Y-%m-%dT%H:%M:%S.%6fZ" };
            json!(t.strftime(format).to_string())
        }
        "Duration" => json!(go_duration(int(1) as i64)),
        "Quantity" => json!(utf8(blob(1))?),
        "IntOrString" if int(1) == 1 => json!(utf8(blob(3))?),
        "IntOrString" => json!(int(2) as i64 as i32),
        // Embedded objects are JSON here (clients encode them so); FieldsV1 is JSON too.
        _ if blob(1).is_empty() => Value::Null,
        _ => serde_json::from_slice(blob(1)).map_err(|e| bad(format!("embedded JSON: {e}")))?,
    })
}

/// Go's `time.Duration.String()` for whole and fractional seconds (`1h2m3.5s`, `0s`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, m) = (n / 3_600_000_000_000, n / 60_000_000_000 % 60);
    let s = n % 60_000_000_000;
    let secs = format!("{}.{:09}", s / 1_000_000_000, s % 1_000_000_000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
