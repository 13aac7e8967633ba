//! The EndpointSlice loop: for each Service with a selector, its slices follow its pods — on any
//! change to the Service, to a pod it selects (before or after the change), to one of its slices
//! (someone else's write is undone) or to a node's zone. What to write is
//! [`super::endpointslice::plan`]'s decision; this loop feeds it from the cache and writes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key, split},
    endpointslice::{self, LABEL_SERVICE_NAME},
    queue::Queue,
    writes,
};
use crate::{
    api::{ApiError, deletion::Options, registry},
    store::Store,
};

const COMPONENT: &str = "endpointslice-controller";
const ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Default)]
pub struct Slices;

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn zone_of(node: &k8s_openapi::api::core::v1::Node) -> Option<&String> {
    node.metadata.labels.as_ref()?.get(ZONE)
}

impl Slices {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        let mut push = |ns: Option<&str>, name: &str| queue.push((Loop::EndpointSlice, key(ns, name)));
        match change {
            Change::Service(delta) => {
                if let Some(svc) = delta.latest() {
                    push(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref().unwrap_or_default());
                }
            }
            Change::Pod(delta) => {
                let Some(ns) = delta.latest().and_then(|p| p.metadata.namespace.as_deref()) else { return };
                for svc in cache.services.in_namespace(ns) {
                    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                        continue;
                    };
                    let hit =
                        |p: &Option<std::sync::Arc<Pod>>| p.as_deref().is_some_and(|p| selects(selector, p));
                    if hit(&delta.old) || hit(&delta.new) {
                        push(Some(ns), svc.metadata.name.as_deref().unwrap_or_default());
                    }
                }
            }
            Change::EndpointSlice(delta) => {
                let Some(slice) = delta.latest() else { return };
                if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME)) {
                    push(slice.metadata.namespace.as_deref(), svc);
                }
            }
            Change::Node(delta) => {
                let zone = |n: &Option<std::sync::Arc<k8s_openapi::api::core::v1::Node>>| {
                    n.as_deref().and_then(zone_of).cloned()
                };
                if zone(&delta.old) != zone(&delta.new) {
                    for svc in cache.services.iter() {
                        push(
                            svc.metadata.namespace.as_deref(),
                            svc.metadata.name.as_deref().unwrap_or_default(),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        svc_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        // A deleted Service's slices are its dependents: the garbage collector removes them.
        let Some(svc) = cache.services.get(svc_key) else { return Ok(None) };
        let (ns, name) = split(svc_key);
        let ns = ns.unwrap_or_default();
        let pods: Vec<&Pod> = cache.pods.in_namespace(ns).map(|p| &**p).collect();
        let existing: Vec<&EndpointSlice> = cache
            .slices
            .in_namespace(ns)
            .filter(|s| {
                s.metadata.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME)).map(String::as_str)
                    == Some(name)
            })
            .map(|s| &**s)
            .collect();
        let node_zone = |node: &str| cache.nodes.get(node).and_then(|n| zone_of(n).cloned());
        let plan = endpointslice::plan(svc, &pods, node_zone, &existing);
        for slice in &plan.create {
            writes::create(ctx, slice, COMPONENT).await?;
        }
        for slice in &plan.update {
            writes::replace(ctx, slice, false, COMPONENT).await?;
        }
        let slices = registry::builtin("endpointslices", "discovery.k8s.io")?;
        for gone in &plan.delete {
            match ctx.server.delete_key(&slices.key(Some(ns), gone), &Options::default()).await {
                Err(e) if e.code != 404 => return Err(e),
                _ => {}
            }
        }
        Ok(None)
    }
}
