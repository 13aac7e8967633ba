//! The kubelet half of the agent: the node's registration and heartbeat ([`node`]), the host's
//! resources ([`host`]), the routes to other nodes' pods ([`routes`]), and the pods themselves
//! ([`pods`], with [`cni`] and [`netns`]).

pub mod cni;
pub mod events;
pub mod host;
pub mod join;
pub mod logs;
pub mod neighbours;
pub mod netns;
pub mod node;
pub mod pods;
pub mod routes;
pub mod server;
pub mod static_pods;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, reflector, watcher},
};

/// Keeps the routes to other nodes' pod CIDRs in step with the Node objects until `shutdown`
/// completes. `handle` is a netlink handle in the node's network namespace.
/// `uplink`: the interface index where the other nodes' neighbour entries are kept resolved for
/// the uplink program (`None`: no uplink program, no managed entries).
pub async fn run_routes(
    client: Client,
    handle: rtnetlink::Handle,
    me: String,
    uplink: Option<u32>,
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
                    let want = routes::desired(&nodes, &me);
                    if let Err(errors) = routes::sync(&handle, &want).await {
                        for e in errors {
                            tracing::warn!("{e}");
                        }
                    }
                    if let Some(ifindex) = uplink {
                        let peers = want.values().copied().collect();
                        if let Err(errors) = neighbours::sync(&handle, ifindex, &peers).await {
                            for e in errors {
                                tracing::warn!("{e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
