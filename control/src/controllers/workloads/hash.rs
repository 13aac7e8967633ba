//! The `pod-template-hash`: a short name for a pod template, used to name a Deployment's
//! ReplicaSets and to label their pods so ReplicaSets of one Deployment never select each other's
//! pods.
//!
//! The value is FNV-1a (32 bit) over a canonical JSON rendering of the template, rendered in
//! Kubernetes' "safe" alphabet (no vowels, no look-alike characters, so no words and nothing
//! ambiguous in a name). It is not upstream's value (upstream hashes a Go-specific dump of the
//! struct) but it only has to be stable: the same template gives the same hash in every process
//! and version of skiff, because the rendering sorts keys and drops what carries no meaning.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::POD_TEMPLATE_HASH_LABEL;

/// Kubernetes' alphabet for generated name parts (`rand.SafeEncodeString`).
const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Characters in a rendered hash: 27^7 exceeds 2^32, so every 32-bit value has its own string.
const HASH_LEN: usize = 7;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The hash of `template` (its own `pod-template-hash` label left out, so a ReplicaSet's template
/// hashes like the Deployment's). A non-zero `collision_count` (the Deployment's
/// `status.collisionCount`) changes the result; that is how a Deployment gets a fresh name when
/// `<name>-<hash>` is already taken by a ReplicaSet that is not its own.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    write_canonical(&canonical(template), &mut text);
    let mut hash = fnv1a(FNV_OFFSET, text.as_bytes());
    if let Some(n) = collision_count.filter(|n| *n != 0) {
        hash = fnv1a(hash, format!("\n{n}").as_bytes());
    }
    safe_encode(hash)
}

/// Whether two templates are the same apart from the `pod-template-hash` label: how a Deployment
/// recognises the ReplicaSet that runs its current template. As with upstream's semantic
/// equality, an empty map or list equals a missing one.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical(a) == canonical(b)
}

/// The template as JSON without the hash label, nulls, or empty objects and lists, so that
/// `labels: {}` and no labels, or a round trip through the store, hash alike. (An empty object is
/// dropped even where a schema could tell `{}` from absent, e.g. `emptyDir: {}`; such fields
/// default to the same thing, so the templates run the same pods.)
fn canonical(template: &PodTemplateSpec) -> Value {
    // Serializing a k8s-openapi struct (string-keyed maps only) cannot fail; if it somehow did,
    // every template would compare equal to every other and share one hash, which is loud.
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    prune(&mut value);
    value
}

/// Removes nulls and empty objects/lists below `value`; returns whether `value` itself is empty.
/// List elements stay even when empty, since their position means something.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => {
            map.retain(|_, v| !prune(v));
            map.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.is_empty()
        }
        _ => false,
    }
}

/// Compact JSON with object keys sorted, independent of how serde_json orders maps.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// `value` in base 27 over [`SAFE_ALPHABET`], most significant digit first, fixed width.
fn safe_encode(mut value: u32) -> String {
    let mut digits = [0u8; HASH_LEN];
    for d in digits.iter_mut().rev() {
        *d = SAFE_ALPHABET[(value % 27) as usize];
        value /= 27;
    }
    digits.iter().map(|b| char::from(*b)).collect()
}
