//! Who a request comes from, for the admission steps that depend on it (NodeRestriction). The
//! dispatcher runs each request inside [`scope`]; admission reads [`node`]. Writes made by the
//! control loops run outside any scope: they are the control plane's own and unrestricted.

use std::future::Future;

use crate::auth::UserInfo;

tokio::task_local! {
    static USER: Option<UserInfo>;
}

/// Runs `request` with `user` as the requester its admission steps see.
pub async fn scope<F: Future>(user: Option<UserInfo>, request: F) -> F::Output {
    USER.scope(user, request).await
}

/// The node the requester is (user `system:node:<name>` in group `system:nodes`), if it is one.
pub fn node() -> Option<String> {
    USER.try_with(|user| {
        let user = user.as_ref()?;
        if !user.groups.iter().any(|g| g == "system:nodes") {
            return None;
        }
        user.name.strip_prefix("system:node:").filter(|n| !n.is_empty()).map(str::to_owned)
    })
    .ok()
    .flatten()
}
