//! The kubelet half of the agent: the node's registration and heartbeat ([`node`]), the host's
//! resources ([`host`]), the routes to other nodes' pods ([`routes`]), and the pods themselves
//! ([`pods`], with [`cni`] and [`netns`]).

pub mod cni;
pub mod events;
pub mod host;
pub mod logs;
pub mod netns;
pub mod node;
pub mod pods;
pub mod routes;
pub mod static_pods;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, reflector, watcher},
};

/// Keeps the routes to other nodes' pod CIDRs in step with the Node objects until `shutdown`
/// completes. `handle` is a netlink handle in the node's network namespace.
pub async fn run_routes(
    client: Client,
    handle: rtnetlink::Handle,
    me: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (store, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(Api::<Node>::all(client), watcher::Config::default())).default_backoff();
    tokio::pin!(stream, shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            event = stream.next() => match event {
                None => return,
                Some(Err(e)) => tracing::warn!("watching nodes: {e}"),
                // Mid-relist the store is incomplete: sync once it is whole again.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => {
                    let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
                    if let Err(errors) = routes::sync(&handle, &routes::desired(&nodes, &me)).await {
                        for e in errors {
                            tracing::warn!("{e}");
                        }
                    }
                }
            }
        }
    }
}
