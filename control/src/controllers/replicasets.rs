//! The ReplicaSet loop: each ReplicaSet keeps `replicas` pods, adopting orphans it selects and
//! releasing pods it stops selecting; [`super::workloads::replicaset::plan`] decides, this loop
//! feeds it from the cache and carries it out. Pods are created in slow-start batches (1, 2, 4,
//! … concurrently) that stop at the first failure, so a broken template costs one request.

use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key, key_of},
    events,
    queue::Queue,
    workloads::{owner, replicaset, selector},
    writes,
};
use crate::{
    api::{ApiError, deletion::Options},
    store::Store,
};

const COMPONENT: &str = "replicaset-controller";

#[derive(Debug, Default)]
pub struct ReplicaSets;

/// The ReplicaSets that may care about `pod`: its controller, or (an orphan) those selecting it.
fn interested<'a>(pod: &'a Pod, cache: &'a Cache) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref();
    match owner::controller_of(&pod.metadata) {
        Some(r) if r.kind == "ReplicaSet" => vec![key(ns, &r.name)],
        Some(_) => Vec::new(),
        None => cache
            .replicasets
            .in_namespace(ns.unwrap_or_default())
            .filter(|rs| selector::matches(&rs.spec.selector, pod.metadata.labels.as_ref()))
            .map(|rs| key_of(&rs.metadata))
            .collect(),
    }
}

impl ReplicaSets {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        match change {
            Change::ReplicaSet(delta) => {
                if let Some(rs) = delta.latest() {
                    queue.push((Loop::ReplicaSet, key_of(&rs.metadata)));
                }
            }
            Change::Pod(delta) => {
                for pod in [&delta.old, &delta.new].into_iter().flatten() {
                    for rs in interested(pod, cache) {
                        queue.push((Loop::ReplicaSet, rs));
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
        rs_key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(rs) = cache.replicasets.get(rs_key) else { return Ok(None) };
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        // Its own pods and the orphans it might adopt: the only ones the plan looks at.
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let pods: Vec<&Pod> = cache.pods.claimable(ns, uid).map(|p| &**p).collect();
        let plan = replicaset::plan(rs, &pods, ctx.clock.now());
        let pod = |name: &str| cache.pods.get(&key(Some(ns), name));
        for p in plan.adopt.iter().filter_map(|n| pod(n)) {
            writes::adopt(ctx, &**p, replicaset::controller_ref(rs), COMPONENT).await?;
        }
        for p in plan.release.iter().filter_map(|n| pod(n)) {
            writes::release(ctx, &**p, &**rs, COMPONENT).await?;
        }
        let pods = vec![replicaset::pod_from_template(rs); plan.create as usize];
        writes::create_pods(ctx, &events::reference(&**rs), &pods, COMPONENT).await?;
        let doomed: Vec<&Arc<Pod>> = plan.delete.iter().filter_map(|n| pod(n)).collect();
        let options = Options::default();
        let deleted =
            join_all(doomed.iter().map(|p| writes::delete::<S, Pod>(ctx, &p.metadata, &options))).await;
        for (p, result) in doomed.iter().zip(deleted) {
            result?;
            let message = format!("Deleted pod: {}", p.metadata.name.as_deref().unwrap_or_default());
            events::record(
                ctx,
                &events::reference(&**rs),
                events::NORMAL,
                "SuccessfulDelete",
                &message,
                COMPONENT,
            )
            .await;
        }
        if rs.status.as_ref() != Some(&plan.status) {
            let mut updated = (**rs).clone();
            updated.status = Some(plan.status);
            writes::replace(ctx, &updated, true, COMPONENT).await?;
        }
        Ok(plan.next_check)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, sync::Arc};

    use serde_json::{Value, json};

    use super::*;
    use crate::{
        api::{ApiServer, decode_object},
        controllers::{Config, clock::SystemClock},
        store::embedded::{self, EmbeddedStore},
    };

    fn owner_uids(server: &ApiServer<EmbeddedStore>, pod: &str) -> Vec<Value> {
        let pod = server.pod("default", pod).expect("pod");
        pod["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["uid"].clone())
            .collect()
    }

    /// The loop reconciles from a cache that may lag behind the store: a ReplicaSet deleted
    /// (Background) after the cache was filled must not release the pods it controls but no
    /// longer selects — released, they would have no owner left for the garbage collector.
    #[tokio::test]
    async fn a_replicaset_deleted_behind_the_cache_releases_nothing() {
        let store = EmbeddedStore::in_memory(embedded::Options::default()).expect("store");
        let server = Arc::new(ApiServer::new(store, (Ipv4Addr::new(10, 96, 0, 0), 12)));
        server.bootstrap(None).await.expect("bootstrap");
        let ctx =
            Ctx { server: server.clone(), clock: Arc::new(SystemClock), config: Arc::new(Config::default()) };
        let mut cache = Cache::default();
        let (key, uid) = owned_unselected(&server, &mut cache, "gone").await;
        server.delete_key(&key, &Options::default()).await.expect("delete");
        assert!(server.store.get(&key).is_none(), "a background delete waited");
        // Its status write finds it gone; what matters is what it did to the pod before that.
        let _ = ReplicaSets.reconcile(&ctx, &cache, "default/gone").await;
        assert_eq!(owner_uids(&server, "gone-pod"), [uid], "released by a deleted ReplicaSet");

        // A ReplicaSet still there releases what it does not select, as upstream's does.
        let (_, uid) = owned_unselected(&server, &mut cache, "here").await;
        assert_eq!(owner_uids(&server, "here-pod"), [uid]);
        ReplicaSets.reconcile(&ctx, &cache, "default/here").await.expect("reconcile");
        assert!(owner_uids(&server, "here-pod").is_empty(), "not released");
    }

    /// A ReplicaSet `name` and a pod it controls but does not select, stored and cached; the
    /// ReplicaSet's key and uid.
    async fn owned_unselected(
        server: &ApiServer<EmbeddedStore>,
        cache: &mut Cache,
        name: &str,
    ) -> (String, Value) {
        let rs = server
            .create_as(
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"replicas": 0, "selector": {"matchLabels": {"rs": name}},
                            "template": {"metadata": {"labels": {"rs": name}},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
                "test",
            )
            .await
            .expect("replicaset");
        let uid = decode_object(&rs).expect("decode")["metadata"]["uid"].clone();
        let pod = server
            .create_as(
                json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("{name}-pod"), "namespace": "default",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                "name": name, "uid": uid, "controller": true}]},
                        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
                "test",
            )
            .await
            .expect("pod");
        for o in [&rs, &pod] {
            cache.apply(&o.key, Some(o));
        }
        (rs.key, uid)
    }
}
