//! The agent's log route, as the kubelet serves it: `GET /containerLogs/<ns>/<pod>/<container>`
//! with `follow`, `previous`, `tailLines` and `limitBytes`. skiff-control proxies `pods/<name>/log`
//! here, so `kubectl logs` works.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::io::AsyncReadExt as _;

use super::pods::{
    Ctx,
    worker::{LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID},
};
use crate::runtime::container::TaskState;

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], message.into()).into_response()
}

/// The log file of the container's current attempt (or the one before, with `previous`), and
/// its containerd id.
async fn find(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String), Response> {
    let found = ctx
        .runtime
        .containers(&[(LABEL_NAMESPACE, ns), (LABEL_NAME, pod), (LABEL_CONTAINER, container)])
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let latest = found
        .iter()
        .filter_map(|c| Some((c.labels.get(LABEL_ATTEMPT)?.parse::<u32>().ok()?, c)))
        .max_by_key(|(attempt, _)| *attempt)
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("container {container:?} in pod {ns}/{pod} is not running on this node"),
            )
        })?;
    let (attempt, c) = latest;
    let uid = c.labels.get(LABEL_UID).cloned().unwrap_or_default();
    let attempt = if previous {
        attempt.checked_sub(1).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            )
        })?
    } else {
        attempt
    };
    Ok((ctx.config.log_path(&uid, container, attempt), c.id.clone()))
}

/// The last `n` lines of `data`.
fn tail(data: &[u8], n: usize) -> &[u8] {
    let mut newlines = 0;
    let end = if data.ends_with(b"\n") { data.len() - 1 } else { data.len() };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            newlines += 1;
            if newlines == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

async fn container_logs(
    State(ctx): State<Arc<Ctx>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let (path, id) = match find(&ctx, &ns, &pod, &container, flag("previous")).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // The file stays open: following reads on from where this read ends.
    let read = async {
        let mut file = tokio::fs::File::open(&path).await?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).await?;
        Ok::<_, std::io::Error>((file, data))
    };
    let (file, data) = match read.await {
        Ok(read) => read,
        Err(e) => return error(StatusCode::NOT_FOUND, format!("{}: {e}", path.display())),
    };
    let start = match query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => data.len() - tail(&data, n).len(),
        None => 0,
    };
    if let Some(limit) = query.get("limitBytes").and_then(|l| l.parse::<usize>().ok()) {
        let body = data[start..data.len().min(start + limit)].to_vec();
        return ([(header::CONTENT_TYPE, "text/plain")], body).into_response();
    }
    if !flag("follow") || flag("previous") {
        return ([(header::CONTENT_TYPE, "text/plain")], data[start..].to_vec()).into_response();
    }
    // Follow: what is there, then whatever is appended until the container stops.
    let first = data[start..].to_vec();
    let stream = futures::stream::unfold((Some(first), file), move |(first, mut file)| {
        let (ctx, id) = (ctx.clone(), id.clone());
        async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, file)));
            }
            loop {
                // A failed read counts as nothing new (what it did read is sent all the same).
                let mut more = Vec::new();
                let _ = file.read_to_end(&mut more).await;
                if !more.is_empty() {
                    return Some((Ok(more), (None, file)));
                }
                let running = matches!(
                    ctx.runtime.task(&id).await,
                    Ok(Some((TaskState::Running | TaskState::Created, _)))
                );
                if !running {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response()
}

/// The log route (served by [`super::server`], behind TLS and authorization).
pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new().route("/containerLogs/{ns}/{pod}/{container}", get(container_logs)).with_state(ctx)
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tails_count_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 5), b"a\n");
    }
}
