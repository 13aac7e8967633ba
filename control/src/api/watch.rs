//! Watches: a chunked stream of `{"type", "object"}` lines.
//!
//! Without a resourceVersion (or with "0") the watch starts with the current objects as ADDED
//! events, then follows changes; with one, it resumes after that revision, or answers with an
//! ERROR event carrying a 410 Status when the revision is no longer in the history.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{
    ApiServer, Request,
    handlers::{render, scope_prefix},
    path::Target,
    selector::{FieldSelector, selectors},
    status::ApiError,
    tables,
};
use crate::store::{EventKind, Store, StoreError};

/// The longest a watch stays open without the client asking for less.
const MAX_WATCH: Duration = Duration::from_secs(1800);
/// How often a bookmark tells an idle watcher the current revision (when it allows them).
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

pub fn watch<S: Store + Clone>(
    server: &ApiServer<S>,
    target: &Target,
    req: &Request,
) -> Result<Response, ApiError> {
    let params = &req.params;
    // kubectl get -w asks for Tables: each event then carries a one-row Table.
    let resource = target.resource;
    let table = req.table.then(|| params.get("includeObject").unwrap_or("").to_owned());
    let shape = move |value: Value| match &table {
        Some(include) => {
            let rv = value.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
            tables::table(resource, &[value], rv, include)
        }
        None => value,
    };
    let (labels, mut fields) = selectors(params)?;
    let mut prefix = scope_prefix(target);
    // Watching one object through its own path is a name field selector.
    if let Some(name) = &target.name {
        fields = FieldSelector::parse(&format!("metadata.name={name}"))?;
    }
    // A single-object watch only needs that object's key range (the selector still filters).
    if let Some(name) = fields.single_name()
        && (target.namespace.is_some() || !target.resource.namespaced)
    {
        prefix = target.resource.key(target.namespace.as_deref(), name);
    }
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(MAX_WATCH, |t| Duration::from_secs(t).min(MAX_WATCH));
    let bookmarks = params.flag("allowWatchBookmarks");
    let from = match params.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };

    // The starting point: a snapshot's ADDED events, or nothing but what follows `from`.
    let (initial, after) = match from {
        None => {
            let (objects, revision) = server.store.list(&prefix);
            let mut added = Vec::new();
            for o in &objects {
                let v = render(o)?;
                if labels.matches(&v) && fields.matches(&v) {
                    added.push(line("ADDED", &shape(v)));
                }
            }
            (added, revision)
        }
        Some(rv) => (Vec::new(), rv),
    };
    let stream = match server.store.watch(&prefix, after) {
        Ok(stream) => stream,
        Err(StoreError::Compacted { requested, .. }) => {
            let status = ApiError::gone(format!(
                "too old resource version: {requested} ({})",
                server.store.revision()
            ))
            .status();
            return Ok(streaming(futures::stream::iter([line("ERROR", &status)]).boxed()));
        }
        Err(e) => return Err(ApiError::internal(e.to_string())),
    };
    let kind = target.resource.kind;
    let api_version = target.resource.api_version();

    // Everything the event loop needs travels in its state, so nothing is copied per event; the
    // flag ends the stream after an ERROR event.
    let events = futures::stream::unfold(
        (stream, tokio::time::interval(BOOKMARK_EVERY), (labels, fields, api_version, shape), false),
        move |(mut stream, mut tick, filter, ended)| async move {
            if ended {
                return None;
            }
            let (labels, fields, api_version, shape) = &filter;
            loop {
                let next = tokio::select! {
                    event = stream.next() => event,
                    _ = tick.tick(), if bookmarks => {
                        let rv = stream.last_revision().to_string();
                        let bookmark = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv}});
                        return Some((line("BOOKMARK", &bookmark), (stream, tick, filter, false)));
                    }
                };
                match next? {
                    Ok(event) => {
                        // The store gives an event's object the event's revision as its mod revision.
                        let Ok(value) = render(&event.object) else { continue };
                        let before: Option<Value> =
                            event.previous.as_ref().and_then(|p| serde_json::from_slice(&p.value).ok());
                        let matches_now = labels.matches(&value) && fields.matches(&value);
                        let matched_before =
                            before.as_ref().is_some_and(|b| labels.matches(b) && fields.matches(b));
                        // Objects moving out of a selector look deleted to its watchers, moving in look added.
                        let kind = match (&event.kind, matched_before, matches_now) {
                            (EventKind::Deleted, true, _) | (EventKind::Deleted, _, true) => "DELETED",
                            (EventKind::Deleted, false, false) => continue,
                            (EventKind::Put, _, true) if event.previous.is_none() || !matched_before => {
                                "ADDED"
                            }
                            (EventKind::Put, true, true) => "MODIFIED",
                            (EventKind::Put, true, false) => "DELETED",
                            (EventKind::Put, ..) => continue,
                        };
                        return Some((line(kind, &shape(value)), (stream, tick, filter, false)));
                    }
                    Err(StoreError::Compacted { requested, .. }) => {
                        let status =
                            ApiError::gone(format!("too old resource version: {requested}")).status();
                        return Some((line("ERROR", &status), (stream, tick, filter, true)));
                    }
                    Err(_) => return None,
                }
            }
        },
    );
    let all = futures::stream::iter(initial).chain(events);
    let bounded = tokio_stream_timeout(all, timeout);
    Ok(streaming(bounded))
}

/// Ends `stream` after `limit` (the watch's timeoutSeconds).
fn tokio_stream_timeout(
    stream: impl futures::Stream<Item = Bytes> + Send + 'static,
    limit: Duration,
) -> futures::stream::BoxStream<'static, Bytes> {
    let deadline = tokio::time::sleep(limit);
    stream.take_until(deadline).boxed()
}

fn streaming(stream: futures::stream::BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")],
        body,
    )
        .into_response()
}
