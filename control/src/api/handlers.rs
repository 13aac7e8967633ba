//! get, list, create, update, delete and deletecollection on any served resource.

use std::{collections::HashSet, net::Ipv4Addr};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    ApiServer, Params, Request, admission, claims, deletion,
    managed::{self, Writer},
    objects::{self, FieldValidation, allocate_cluster_ip, check_object, merge_update, prepare_create},
    patch::{PatchType, json_patch, merge, strategic},
    path::Target,
    priority, protobuf,
    registry::{self, Resource},
    scale,
    selector::selectors,
    status::ApiError,
    tables,
};
use crate::store::{Object, Store, StoreError};

/// The stored JSON with the object's resourceVersion set.
pub fn render(object: &Object) -> Result<Value, ApiError> {
    let mut value: Value = serde_json::from_slice(&object.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", object.key)))?;
    value["metadata"]["resourceVersion"] = json!(object.mod_revision.to_string());
    Ok(value)
}

/// The stored JSON as it is (no resourceVersion), to edit and write back.
pub fn decode(object: &Object) -> Result<Value, ApiError> {
    serde_json::from_slice(&object.value).map_err(|e| ApiError::internal(e.to_string()))
}

fn store_error(e: StoreError, plural: &str, name: &str) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::not_found(plural, name),
        StoreError::AlreadyExists { .. } => ApiError::already_exists(plural, name),
        StoreError::Conflict { .. } => ApiError::conflict(plural, name),
        StoreError::Compacted { requested, .. } => {
            ApiError::gone(format!("too old resource version: {requested}"))
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// The stored bytes with `metadata.resourceVersion` spliced in, without parsing: stored objects
/// are compact serde_json output (sorted keys, so the top-level `"metadata":{` comes after
/// `apiVersion` and `kind`, whose values are strings) and never hold a resourceVersion.
pub fn render_bytes(object: &Object) -> Result<Vec<u8>, ApiError> {
    const MARK: &[u8] = b"\"metadata\":{";
    let at = object
        .value
        .windows(MARK.len())
        .position(|w| w == MARK)
        .map(|p| p + MARK.len())
        .ok_or_else(|| ApiError::internal(format!("stored object {} has no metadata", object.key)))?;
    let rv = format!("\"resourceVersion\":\"{}\"", object.mod_revision);
    let mut out = Vec::with_capacity(object.value.len() + rv.len() + 1);
    out.extend_from_slice(&object.value[..at]);
    out.extend_from_slice(rv.as_bytes());
    if object.value.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&object.value[at..]);
    Ok(out)
}

/// The storage prefix a request covers (one namespace, or everything of the resource).
pub fn scope_prefix(target: &Target) -> String {
    match (&target.namespace, target.resource.namespaced) {
        (Some(ns), true) => target.resource.namespace_prefix(ns),
        _ => target.resource.prefix(),
    }
}

fn json(code: StatusCode, value: Value) -> Response {
    (code, axum::Json(value)).into_response()
}

pub fn get<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let key = target.resource.key(target.namespace.as_deref(), name);
    let object = server.store.get(&key).ok_or_else(|| ApiError::not_found(target.resource.plural, name))?;
    let value = render(&object)?;
    if req.table {
        return Ok(json(
            StatusCode::OK,
            tables::table(target.resource, &[value], None, req.params.get("includeObject").unwrap_or("")),
        ));
    }
    Ok(json(StatusCode::OK, value))
}

/// The objects a list-like request selects (scope, label and field selectors), rendered, with
/// the snapshot's revision.
fn selected<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    params: &Params,
) -> Result<(Vec<(Object, Value)>, u64), ApiError> {
    let (labels, fields) = selectors(params)?;
    let (objects, revision) = server.store.list(&scope_prefix(target));
    let mut out = Vec::with_capacity(objects.len());
    for o in objects {
        let v = render(&o)?;
        if labels.matches(&v) && fields.matches(&v) {
            out.push((o, v));
        }
    }
    Ok((out, revision))
}

fn list_object(r: &Resource, items: Vec<Value>) -> Value {
    json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {}, "items": items})
}

/// `limit`/`continue` paging. A continue token names the list's revision and the last key served;
/// the next page comes from the same snapshot (the store rewinds its history), so pages add up
/// to one consistent list however much changes meanwhile. Once the history no longer reaches
/// back that far the token is 410 Expired and the client re-lists, as with etcd compaction.
struct Paging {
    limit: usize,
    after_key: Option<String>,
    /// The snapshot to serve (a continued list's, or an exact resourceVersion); else the latest.
    revision: Option<u64>,
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

fn encode_continue(revision: u64, key: &str) -> String {
    let raw = serde_json::to_vec(&json!({"rv": revision, "key": key})).unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((v.get("rv")?.as_u64()?, v.get("key")?.as_str()?.to_owned()))
}

fn paging<S: Store>(server: &ApiServer<S>, prefix: &str, params: &Params) -> Result<Paging, ApiError> {
    let limit = match params.get("limit") {
        None | Some("") => 0,
        Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
    };
    let rv = params.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0");
    let current = server.store.revision();
    if let Some(token) = params.get("continue").filter(|c| !c.is_empty()) {
        if rv.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (revision, key) =
            decode_continue(token).ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        if revision > current || !key.starts_with(prefix) {
            return Err(ApiError::bad_request("invalid continue token"));
        }
        return Ok(Paging { limit, after_key: Some(key), revision: Some(revision) });
    }
    if let Some(rv) = rv {
        let rv: u64 =
            rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        if rv > current {
            return Err(ApiError::timeout(format!("Too large resource version: {rv}, current: {current}")));
        }
        if params.get("resourceVersionMatch") == Some("Exact") {
            return Ok(Paging { limit, after_key: None, revision: Some(rv) });
        }
    }
    Ok(Paging { limit, after_key: None, revision: None })
}

/// One page of a list.
struct Page {
    /// The selected objects, parsed when a selector or a Table needed them.
    items: Vec<(Object, Option<Value>)>,
    /// The list's revision (the first page's, for later pages).
    revision: u64,
    /// Set when more items follow.
    token: Option<String>,
    remaining: usize,
}

fn list_page<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    params: &Params,
    parse_all: bool,
) -> Result<Page, ApiError> {
    let prefix = scope_prefix(target);
    let paging = paging(server, &prefix, params)?;
    let (labels, fields) = selectors(params)?;
    let (objects, revision) = match paging.revision {
        Some(at) => match server.store.list_at(&prefix, at) {
            Ok(objects) => (objects, at),
            Err(StoreError::Compacted { oldest, .. }) => {
                return Err(ApiError::gone(if paging.after_key.is_some() {
                    CONTINUE_EXPIRED.to_owned()
                } else {
                    format!("too old resource version: {at} ({oldest})")
                }));
            }
            Err(e) => return Err(ApiError::internal(e.to_string())),
        },
        None => server.store.list(&prefix),
    };
    let filtering = !(labels.is_empty() && fields.is_empty());
    let mut chosen = Vec::new();
    let mut remaining = 0;
    for o in objects.into_iter().filter(|o| paging.after_key.as_deref().is_none_or(|k| o.key.as_str() > k)) {
        let value = if filtering || parse_all {
            let v = render(&o)?;
            if !(labels.matches(&v) && fields.matches(&v)) {
                continue;
            }
            Some(v)
        } else {
            None
        };
        if paging.limit > 0 && chosen.len() == paging.limit {
            remaining += 1;
        } else {
            chosen.push((o, value));
        }
    }
    let token =
        (remaining > 0).then(|| chosen.last().map(|(o, _)| encode_continue(revision, &o.key))).flatten();
    Ok(Page { items: chosen, revision, token, remaining })
}

pub fn list<S: Store>(server: &ApiServer<S>, target: &Target, req: &Request) -> Result<Response, ApiError> {
    let r = target.resource;
    let Page { items: page, revision, token, remaining } = list_page(server, target, &req.params, req.table)?;
    if req.table {
        let values: Vec<Value> = page.into_iter().filter_map(|(_, v)| v).collect();
        let include = req.params.get("includeObject").unwrap_or("");
        let mut table = tables::table(r, &values, Some(revision.to_string()), include);
        if let Some(token) = &token {
            table["metadata"]["continue"] = json!(token);
            table["metadata"]["remainingItemCount"] = json!(remaining);
        }
        return Ok(json(StatusCode::OK, table));
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = &token {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    // Assembled as bytes: 10k objects are spliced, not parsed and re-serialised.
    let mut body = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{metadata},\"items\":[",
        r.kind,
        r.api_version()
    )
    .into_bytes();
    for (i, (o, _)) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&render_bytes(o)?);
    }
    body.extend_from_slice(b"]}");
    Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A request body as JSON: JSON as it is, protobuf decoded (kubectl's typed commands send it).
pub fn parse_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == protobuf::MEDIA_TYPE {
        return protobuf::decode(body);
    }
    if !(media.is_empty() || media == "application/json" || media == "*/*") {
        return Err(ApiError::unsupported_media_type(media));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

async fn namespace_exists<S: Store>(server: &ApiServer<S>, target: &Target) -> Result<(), ApiError> {
    let Some(ns) = target.namespace.as_deref().filter(|_| target.resource.namespaced) else { return Ok(()) };
    let namespaces = registry::builtin("namespaces", "")?;
    let Some(namespace) = server.store.get(&namespaces.key(None, ns)) else {
        return Err(ApiError::not_found("namespaces", ns));
    };
    // NamespaceLifecycle: nothing new in a namespace being emptied for deletion.
    if decode(&namespace)?.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        )));
    }
    Ok(())
}

/// ClusterIPs and node ports held by Services other than `except`.
fn used_addresses<S: Store>(
    server: &ApiServer<S>,
    services: &Resource,
    except: Option<&str>,
) -> (HashSet<Ipv4Addr>, HashSet<u16>) {
    let (objects, _) = server.store.list(&services.prefix());
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for v in objects
        .iter()
        .filter(|o| Some(o.key.as_str()) != except)
        .filter_map(|o| serde_json::from_slice::<Value>(&o.value).ok())
    {
        if let Some(ip) = v.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse().ok()) {
            ips.insert(ip);
        }
        for p in v.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()) {
                ports.insert(n);
            }
        }
        if let Some(n) =
            v.pointer("/spec/healthCheckNodePort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok())
        {
            ports.insert(n);
        }
    }
    (ips, ports)
}

pub async fn create<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    req: &Request,
) -> Result<Response, ApiError> {
    let validation = FieldValidation::from_param(req.params.get("fieldValidation"))?;
    let value = parse_body(&req.body, &req.content_type)?;
    create_value(server, target, value, validation, Some(&writer(req, target)?)).await
}

/// Who is writing, for `managedFields`: the `fieldManager` parameter, or else the client's name
/// from its User-Agent (as the API server does).
fn writer(req: &Request, target: &Target) -> Result<Writer, ApiError> {
    let manager = match req.params.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_owned(),
        None => req.user_agent.split('/').next().filter(|a| !a.is_empty()).unwrap_or("unknown").to_owned(),
    };
    if manager.len() > 128 || manager.chars().any(char::is_control) {
        return Err(ApiError::bad_request("fieldManager must be at most 128 printable characters"));
    }
    Ok(Writer {
        manager,
        api_version: target.resource.api_version(),
        subresource: target.subresource.clone(),
    })
}

/// Creates `value`; `writer` (unless the caller recorded ownership already, as apply does) is
/// recorded as owning every field.
async fn create_value<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    mut value: Value,
    validation: FieldValidation,
    writer: Option<&Writer>,
) -> Result<Response, ApiError> {
    // A new Pod starts Pending whatever status the client sent, as upstream's PrepareForCreate
    // resets it: its status is its agent's to report (a pod created "Succeeded" would run
    // uncounted by quota). The loops' own creates (`create_as`) keep theirs.
    if target.resource.kind == "Pod"
        && let Some(o) = value.as_object_mut()
    {
        o.insert("status".into(), json!({"phase": "Pending"}));
    }
    let (stored, warnings) = create_stored(server, target, value, validation, writer).await?;
    Ok(with_warnings(json(StatusCode::CREATED, render(&stored)?), &warnings))
}

/// [`create_value`] without the HTTP answer: the stored object and the warnings.
pub(super) async fn create_stored<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    mut value: Value,
    validation: FieldValidation,
    writer: Option<&Writer>,
) -> Result<(Object, Vec<String>), ApiError> {
    let r = target.resource;
    let name = prepare_create(r, target.namespace.as_deref(), &mut value)?;
    let warnings = check_object(r, &value, validation)?;
    admission::default(r.kind, &mut value);
    priority::admit(server, r.kind, &name, &mut value, None).await?;
    admission::admit_create(server, r, target.namespace.as_deref(), &name, &mut value)?;
    if let Some(w) = writer {
        managed::record_update(None, &mut value, w);
    }
    admission::validate(r.kind, &name, &value)?;
    namespace_exists(server, target).await?;
    if r.kind == "Pod" {
        super::service_accounts::admit(server, target.namespace.as_deref().unwrap_or_default(), &mut value)
            .await?;
    }
    let key = r.key(target.namespace.as_deref(), &name);
    // Charged quotas stay locked until the object is written (see admission/quota.rs).
    let charged = match target.namespace.as_deref().filter(|_| r.namespaced) {
        Some(ns) => admission::quota::charge(server, r, ns, &name, &value).await?,
        None => None,
    };
    let written = if r.kind == "Service" {
        create_service(server, r, &key, &name, &value).await
    } else {
        match to_bytes(&value) {
            Ok(bytes) => server.store.create(&key, bytes).await.map_err(|e| store_error(e, r.plural, &name)),
            Err(e) => Err(e),
        }
    };
    // A failed write (the name taken, an address held) gives its charge back.
    let stored = admission::quota::settle(server, charged, written).await?;
    Ok((stored, warnings))
}

/// The 422 for an address a client asked for that another Service holds.
fn already_allocated(name: &str, address: claims::Address) -> ApiError {
    let (field, what) = match address {
        claims::Address::ClusterIp(ip) => ("spec.clusterIP".to_owned(), format!("\"{ip}\": provided IP")),
        claims::Address::NodePort(port) => {
            ("spec.ports.nodePort".to_owned(), format!("{port}: provided port"))
        }
    };
    ApiError::invalid("Service", name, vec![(field, format!("Invalid value: {what} is already allocated"))])
}

/// Creates a Service with its ClusterIP and node ports: picked from what this server sees,
/// claimed cluster-wide (`claims.rs`), then written. An address another API server claimed first
/// is skipped on the next pick, or refused when the client asked for it.
async fn create_service<S: Store>(
    server: &ApiServer<S>,
    r: &Resource,
    key: &str,
    name: &str,
    value: &Value,
) -> Result<Object, ApiError> {
    // One allocation at a time here; the claims order allocations across API servers.
    let _guard = server.allocations.lock().await;
    let mut lost = HashSet::new();
    for _ in 0..32 {
        let (mut ips, mut ports) = used_addresses(server, r, None);
        for address in &lost {
            match *address {
                claims::Address::ClusterIp(ip) => ips.insert(ip),
                claims::Address::NodePort(port) => ports.insert(port),
            };
        }
        let mut candidate = value.clone();
        allocate_cluster_ip(&mut candidate, server.service_cidr, &ips)?;
        objects::allocate_node_ports(&mut candidate, &ports)?;
        match claims::claim(server, key, &claims::held(&candidate)).await {
            Ok(made) => {
                return match server.store.create(key, to_bytes(&candidate)?).await {
                    Ok(stored) => Ok(stored),
                    Err(e) => {
                        // A backend error may hide a write that happened: keep the claims (a
                        // left-over claim is taken over once stale; a lost one is not).
                        if !matches!(e, StoreError::Backend(_)) {
                            claims::release(server, key, &made).await;
                        }
                        Err(store_error(e, r.plural, name))
                    }
                };
            }
            Err(Ok(address)) if claims::held(value).contains(&address) => {
                return Err(already_allocated(name, address));
            }
            Err(Ok(address)) => {
                lost.insert(address);
            }
            Err(Err(e)) => return Err(e),
        }
    }
    Err(ApiError::internal("no free address: other API servers kept claiming the ones picked"))
}

/// Adds a `Warning: 299` header per warning, as kubectl prints them.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            response.headers_mut().append(axum::http::header::WARNING, v);
        }
    }
    response
}

fn to_bytes(value: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))
}

fn resource_version(value: &Value) -> Result<Option<u64>, ApiError> {
    match value.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        Some(rv) if !rv.is_empty() => rv
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
        _ => Ok(None),
    }
}

/// Replaces an existing object with what `make` builds from its current state, keeping what an
/// update may not change; `expected` (or else the state just read) guards against lost updates.
pub(super) async fn write_existing<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    expected: Option<u64>,
    validation: FieldValidation,
    writer: Option<&Writer>,
    make: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<(Object, Vec<String>), ApiError> {
    let r = target.resource;
    let key = r.key(target.namespace.as_deref(), name);
    let current = server.store.get(&key).ok_or_else(|| ApiError::not_found(r.plural, name))?;
    let old = decode(&current)?;
    let mut value = make(&old)?;
    merge_update(r, &old, &mut value, target.subresource.as_deref() == Some("status"))?;
    if r.kind == "Service" {
        objects::carry_allocations(&old, &mut value);
    }
    let warnings = check_object(r, &value, validation)?;
    admission::default(r.kind, &mut value);
    priority::admit(server, r.kind, name, &mut value, Some(&old)).await?;
    if let Some(w) = writer {
        managed::record_update(Some(&old), &mut value, w);
    }
    admission::validate(r.kind, name, &value)?;
    admission::immutable(r.kind, name, &old, &value)?;
    admission::admit_update(r, name, &old, &value)?;
    let charged = match target.namespace.as_deref().filter(|_| target.subresource.is_none()) {
        Some(ns) => admission::quota::charge_update(server, r, ns, name, &old, &value).await?,
        None => None,
    };
    let expected = expected.unwrap_or(current.mod_revision);
    let written = write_admitted(server, r, &key, name, expected, &old, value).await;
    // A failed write (a lost race, an address held) gives its charge back: a retried patch is
    // charged once.
    let stored = admission::quota::settle(server, charged, written).await?;
    Ok((stored, warnings))
}

/// The write of an admitted update of the object at `key` from `old` to `value`, if its
/// revision is still `expected`: a Service's node ports allocated and claimed first.
async fn write_admitted<S: Store>(
    server: &ApiServer<S>,
    r: &Resource,
    key: &str,
    name: &str,
    expected: u64,
    old: &Value,
    mut value: Value,
) -> Result<Object, ApiError> {
    // Node ports are global like ClusterIPs: allocate under the same lock as creates, held until
    // the write is done.
    let mut claimed = Vec::new();
    let _guard = if r.kind == "Service" {
        let guard = server.allocations.lock().await;
        let (_, node_ports) = used_addresses(server, r, Some(key));
        objects::allocate_node_ports(&mut value, &node_ports)?;
        claimed = match claims::claim(server, key, &claims::held(&value)).await {
            Ok(made) => made,
            Err(Ok(address)) => return Err(already_allocated(name, address)),
            Err(Err(e)) => return Err(e),
        };
        Some(guard)
    } else {
        None
    };
    if let Some(o) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        o.remove("resourceVersion");
    }
    let expected = Some(expected);
    // Removing the last finalizer of an object being deleted completes the deletion.
    let result = if deletion::finished(r.kind, &value) {
        server.store.delete(key, expected).await.map(|gone| (gone, Vec::new()))
    } else {
        server
            .store
            .update(key, to_bytes(&value)?, expected)
            .await
            .map(|stored| (stored, claims::held(&value)))
    };
    match result {
        Ok((stored, kept)) => {
            if r.kind == "Service" {
                let dropped: Vec<_> = claims::held(old).into_iter().filter(|a| !kept.contains(a)).collect();
                claims::release(server, key, &dropped).await;
            }
            Ok(stored)
        }
        Err(e) => {
            if !matches!(e, StoreError::Backend(_)) {
                claims::release(server, key, &claimed).await;
            }
            Err(store_error(e, r.plural, name))
        }
    }
}

pub async fn update<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let validation = FieldValidation::from_param(req.params.get("fieldValidation"))?;
    let value = parse_body(&req.body, &req.content_type)?;
    let expected = resource_version(&value)?;
    let writer = writer(req, target)?;
    if target.subresource.as_deref() == Some("scale") {
        let (stored, _) =
            write_existing(server, target, name, expected, FieldValidation::Ignore, Some(&writer), |old| {
                scale::apply(old, &value)
            })
            .await?;
        return Ok(json(StatusCode::OK, scale::view(&render(&stored)?)));
    }
    let (stored, warnings) =
        write_existing(server, target, name, expected, validation, Some(&writer), |_| Ok(value)).await?;
    Ok(with_warnings(json(StatusCode::OK, render(&stored)?), &warnings))
}

/// PATCH: merge, JSON, strategic merge or apply. A lost race with another writer is retried
/// against the new state, as the API server does.
pub async fn patch<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let (params, body) = (&req.params, &req.body[..]);
    let validation = FieldValidation::from_param(params.get("fieldValidation"))?;
    let kind = PatchType::from_content_type(&req.content_type)?;
    let patch: Value = match kind {
        PatchType::Apply => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the apply configuration is not valid YAML: {e}")))?,
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?,
    };
    if kind == PatchType::Apply && !patch.is_object() {
        return Err(ApiError::bad_request("an apply configuration must be an object"));
    }
    if kind == PatchType::Apply && params.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("fieldManager is required for apply patch"));
    }
    let writer = writer(req, target)?;
    let force = params.flag("force");
    if kind == PatchType::Apply {
        let key = target.resource.key(target.namespace.as_deref(), name);
        if server.store.get(&key).is_none() && target.subresource.is_none() {
            let mut config = patch.clone();
            config["metadata"]["name"] = Value::String(name.to_owned());
            let applied = managed::apply(None, &config, &writer, force)?;
            return create_value(server, target, applied, validation, None).await;
        }
    }
    let scale = target.subresource.as_deref() == Some("scale");
    for _ in 0..5 {
        let recorded = if kind == PatchType::Apply { None } else { Some(&writer) };
        let result = write_existing(
            server,
            target,
            name,
            None,
            if scale { FieldValidation::Ignore } else { validation },
            recorded,
            |old| {
                let mut doc = if scale { scale::view(old) } else { old.clone() };
                match kind {
                    PatchType::Merge => merge(&mut doc, &patch),
                    PatchType::Strategic => strategic(&mut doc, &patch),
                    PatchType::Json => json_patch(&mut doc, &patch)?,
                    PatchType::Apply if !scale => return managed::apply(Some(old), &patch, &writer, force),
                    PatchType::Apply => strategic(&mut doc, &patch),
                }
                if scale { scale::apply(old, &doc) } else { Ok(doc) }
            },
        )
        .await;
        match result {
            Ok((stored, warnings)) => {
                let rendered = render(&stored)?;
                let body = if scale { scale::view(&rendered) } else { rendered };
                return Ok(with_warnings(json(StatusCode::OK, body), &warnings));
            }
            // A lost race is retried; an apply's field conflicts are the client's to resolve.
            Err(e) if e.reason == "Conflict" && !e.is_field_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(target.resource.plural, name))
}

/// GET of the `scale` subresource.
pub fn get_scale<S: Store>(server: &ApiServer<S>, target: &Target, name: &str) -> Result<Response, ApiError> {
    let key = target.resource.key(target.namespace.as_deref(), name);
    let object = server.store.get(&key).ok_or_else(|| ApiError::not_found(target.resource.plural, name))?;
    Ok(json(StatusCode::OK, scale::view(&render(&object)?)))
}

/// DELETE: immediate, or — for an object with finalizers, or a bound Pod given a grace period —
/// marked with a deletionTimestamp and kept until the finalizers are gone or the node's agent
/// deletes it with grace 0.
pub async fn delete<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    name: &str,
    req: &Request,
) -> Result<Response, ApiError> {
    let options = deletion::Options::parse(&req.params, &optional_body(req)?)?;
    let r = target.resource;
    let object = delete_object(server, r, &r.key(target.namespace.as_deref(), name), &options).await?;
    Ok(json(StatusCode::OK, render(&object)?))
}

/// A body the client may leave out (a DELETE's DeleteOptions, an Eviction): null when empty, else
/// as [`parse_body`] reads it (JSON or protobuf).
pub(super) fn optional_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.is_empty() { Ok(Value::Null) } else { parse_body(&req.body, &req.content_type) }
}

/// Deletes (or marks for deletion) the object at `key` as `options` say; returns its last state.
pub async fn delete_object<S: Store>(
    server: &ApiServer<S>,
    r: &Resource,
    key: &str,
    options: &deletion::Options,
) -> Result<Object, ApiError> {
    let name = key.rsplit('/').next().unwrap_or(key);
    priority::check_delete(r.kind, name)?;
    for _ in 0..5 {
        let current = server.store.get(key).ok_or_else(|| ApiError::not_found(r.plural, name))?;
        let mut object = decode(&current)?;
        options.check_preconditions(&object, current.mod_revision, r.plural, name)?;
        let result = match deletion::plan(r.kind, &mut object, options) {
            deletion::Plan::Now => server.store.delete(key, Some(current.mod_revision)).await,
            deletion::Plan::Mark => {
                server.store.update(key, to_bytes(&object)?, Some(current.mod_revision)).await
            }
            deletion::Plan::AlreadyMarked => return Ok(current),
        };
        match result {
            Ok(o) => {
                if r.kind == "Service" && server.store.get(key).is_none() {
                    claims::release(server, key, &claims::held(&object)).await;
                }
                return Ok(o);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(e, r.plural, name)),
        }
    }
    Err(ApiError::conflict(r.plural, name))
}

/// Applies a metadata-only edit to the object at `key` (retrying lost races); an object being
/// deleted whose last finalizer the edit removed is deleted. `Ok(false)`: the edit changed nothing
/// or the object is gone.
pub async fn edit_metadata<S: Store>(
    server: &ApiServer<S>,
    r: &Resource,
    key: &str,
    mut edit: impl FnMut(&mut Value) -> bool,
) -> Result<bool, ApiError> {
    let name = key.rsplit('/').next().unwrap_or(key);
    for _ in 0..5 {
        let Some(current) = server.store.get(key) else { return Ok(false) };
        let mut object = decode(&current)?;
        if !edit(&mut object) {
            return Ok(false);
        }
        let result = if deletion::finished(r.kind, &object) {
            server.store.delete(key, Some(current.mod_revision)).await
        } else {
            server.store.update(key, to_bytes(&object)?, Some(current.mod_revision)).await
        };
        match result {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(store_error(e, r.plural, name)),
        }
    }
    Err(ApiError::conflict(r.plural, name))
}

/// DELETE of a collection: each selected object is deleted as a single DELETE would.
pub async fn delete_collection<S: Store>(
    server: &ApiServer<S>,
    target: &Target,
    req: &Request,
) -> Result<Response, ApiError> {
    let options = deletion::Options::parse(&req.params, &optional_body(req)?)?;
    if options.precondition_uid.is_some() || options.precondition_rv.is_some() {
        return Err(ApiError::bad_request("preconditions do not apply to a collection"));
    }
    let (selected, _) = selected(server, target, &req.params)?;
    let mut items = Vec::new();
    for (o, _) in selected {
        match delete_object(server, target.resource, &o.key, &options).await {
            Ok(last) => items.push(render(&last)?),
            // Deleted meanwhile: someone else's delete wins, like the API server's.
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json(StatusCode::OK, list_object(target.resource, items)))
}

/// Creates `value` at `key` unless something is there already (bootstrap objects).
async fn create_if_missing<S: Store>(
    server: &ApiServer<S>,
    key: &str,
    value: &Value,
) -> Result<(), ApiError> {
    if server.store.get(key).is_some() {
        return Ok(());
    }
    match server.store.create(key, to_bytes(value)?).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// What every cluster starts with: the built-in namespaces, the `kubernetes` Service in
/// `default` on the first ClusterIP (its EndpointSlice names `advertise` when known), and the
/// built-in PriorityClasses.
pub async fn bootstrap<S: Store>(
    server: &ApiServer<S>,
    advertise: Option<std::net::SocketAddr>,
) -> Result<(), ApiError> {
    let namespaces = registry::builtin("namespaces", "")?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let mut ns = json!({"metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        prepare_create(namespaces, None, &mut ns)?;
        create_if_missing(server, &namespaces.key(None, name), &ns).await?;
    }
    let services = registry::builtin("services", "")?;
    let first = Ipv4Addr::from(u32::from(server.service_cidr.0) + 1);
    let port = advertise.map_or(6443, |a| a.port());
    let mut svc = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": first.to_string(), "clusterIPs": [first.to_string()], "type": "ClusterIP",
                 "sessionAffinity": "None", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    prepare_create(services, Some("default"), &mut svc)?;
    create_if_missing(server, &services.key(Some("default"), "kubernetes"), &svc).await?;
    if let Some(std::net::SocketAddr::V4(addr)) = advertise {
        let slices = registry::builtin("endpointslices", "discovery.k8s.io")?;
        let mut slice = json!({
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "skiff-control"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
        });
        prepare_create(slices, Some("default"), &mut slice)?;
        create_if_missing(server, &slices.key(Some("default"), "kubernetes"), &slice).await?;
    }
    let classes = registry::builtin("priorityclasses", "scheduling.k8s.io")?;
    for mut class in priority::system_classes() {
        let name = class["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        prepare_create(classes, None, &mut class)?;
        create_if_missing(server, &classes.key(None, &name), &class).await?;
    }
    // The default RBAC policy (created once; an operator's edits to it are kept).
    for (plural, objects) in [
        ("clusterroles", crate::authz::policy::cluster_roles()),
        ("clusterrolebindings", crate::authz::policy::cluster_role_bindings()),
    ] {
        let r = registry::builtin(plural, "rbac.authorization.k8s.io")?;
        for mut object in objects {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            prepare_create(r, None, &mut object)?;
            create_if_missing(server, &r.key(None, &name), &object).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_the_resource_version_matches_rendering_it() {
        for stored in [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "default"}, "spec": {}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "data": {"metadata": "x\"metadata\":{"}}),
        ] {
            let object = Object {
                key: "/k".into(),
                value: serde_json::to_vec(&stored).expect("json"),
                create_revision: 3,
                mod_revision: 7,
            };
            let spliced: Value =
                serde_json::from_slice(&render_bytes(&object).expect("splice")).expect("valid JSON");
            assert_eq!(spliced, render(&object).expect("render"));
            assert_eq!(spliced["metadata"]["resourceVersion"], "7");
        }
    }
}
