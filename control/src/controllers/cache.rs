//! What the control loops read: typed copies of the objects they care about, kept current from
//! the one store watch, with the indexes they need (pods by node, objects by controlling owner).
//! Every cached object carries its `resourceVersion`, so a loop's write is a compare-and-swap
//! against exactly what it read.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    sync::Arc,
};

use k8s_openapi::{
    Metadata,
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet},
        batch::v1::{CronJob, Job},
        coordination::v1::Lease,
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::de::DeserializeOwned;

use crate::{
    api::registry,
    store::{Object, Revision},
};

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

/// Splits a cache key into namespace and name.
pub fn split(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// The uid of the object's controller (the owner reference with `controller: true`).
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
}

/// The cache key of `meta`'s object.
pub fn key_of(meta: &ObjectMeta) -> String {
    key(meta.namespace.as_deref(), meta.name.as_deref().unwrap_or_default())
}

/// The objects of one kind.
#[derive(Debug)]
pub struct Objects<T> {
    map: BTreeMap<String, Arc<T>>,
    /// Controller uid → keys of the objects it controls.
    controlled: HashMap<String, BTreeSet<String>>,
    /// Keys of the objects without a controller (what a controller may adopt).
    uncontrolled: BTreeSet<String>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Self { map: BTreeMap::new(), controlled: HashMap::new(), uncontrolled: BTreeSet::new() }
    }
}

/// The entries of `keys` (sorted `namespace/name` keys) in `namespace`.
fn keys_in<'a>(keys: &'a BTreeSet<String>, namespace: &str) -> impl Iterator<Item = &'a String> + 'a {
    let prefix = format!("{namespace}/");
    keys.range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
        .take_while(move |k| k.starts_with(&prefix))
}

impl<T: Metadata<Ty = ObjectMeta>> Objects<T> {
    pub fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.map.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The objects in `namespace`.
    pub fn in_namespace<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        let prefix = format!("{namespace}/");
        self.map
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
    }

    /// The objects whose controller has `uid`.
    pub fn controlled_by<'a>(&'a self, uid: &str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        self.controlled.get(uid).into_iter().flatten().filter_map(|k| self.map.get(k))
    }

    /// The objects in `namespace` without a controller.
    pub fn uncontrolled_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        keys_in(&self.uncontrolled, namespace).filter_map(|k| self.map.get(k))
    }

    /// What a controller with `uid` in `namespace` may claim: the objects it controls and the
    /// namespace's objects without a controller.
    pub fn claimable<'a>(&'a self, namespace: &str, uid: &str) -> impl Iterator<Item = &'a Arc<T>> + 'a {
        let ns = namespace.to_owned();
        self.controlled_by(uid)
            .filter(move |o| o.metadata().namespace.as_deref() == Some(ns.as_str()))
            .chain(self.uncontrolled_in(namespace))
    }

    /// Stores (or with `None` removes) the object at `key`; returns what was there.
    fn put(&mut self, key: &str, new: Option<Arc<T>>) -> Option<Arc<T>> {
        let old = match &new {
            Some(v) => self.map.insert(key.to_owned(), v.clone()),
            None => self.map.remove(key),
        };
        if let Some(uid) = old.as_ref().and_then(|o| controller_uid(o.metadata()))
            && let Some(keys) = self.controlled.get_mut(uid)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.controlled.remove(uid);
            }
        }
        match new.as_ref().map(|o| controller_uid(o.metadata())) {
            Some(Some(uid)) => {
                self.controlled.entry(uid.to_owned()).or_default().insert(key.to_owned());
                self.uncontrolled.remove(key);
            }
            Some(None) => {
                self.uncontrolled.insert(key.to_owned());
            }
            None => {
                self.uncontrolled.remove(key);
            }
        }
        old
    }
}

/// One object changed: what it was and what it is (`None`: absent).
#[derive(Debug, Clone)]
pub struct Delta<T> {
    pub old: Option<Arc<T>>,
    pub new: Option<Arc<T>>,
}

impl<T> Delta<T> {
    /// The object as it is, or else as it was.
    pub fn latest(&self) -> Option<&Arc<T>> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

/// A change to a cached object, by kind.
#[derive(Debug, Clone)]
pub enum Change {
    Pod(Delta<Pod>),
    Node(Delta<Node>),
    Service(Delta<Service>),
    EndpointSlice(Delta<EndpointSlice>),
    ReplicaSet(Delta<ReplicaSet>),
    Deployment(Delta<Deployment>),
    DaemonSet(Delta<DaemonSet>),
    Lease(Delta<Lease>),
    Job(Delta<Job>),
    CronJob(Delta<CronJob>),
    PodDisruptionBudget(Delta<PodDisruptionBudget>),
}

#[derive(Debug, Default)]
pub struct Cache {
    pub pods: Objects<Pod>,
    pub nodes: Objects<Node>,
    pub services: Objects<Service>,
    pub slices: Objects<EndpointSlice>,
    pub replicasets: Objects<ReplicaSet>,
    pub deployments: Objects<Deployment>,
    pub daemonsets: Objects<DaemonSet>,
    pub leases: Objects<Lease>,
    pub jobs: Objects<Job>,
    pub cronjobs: Objects<CronJob>,
    pub budgets: Objects<PodDisruptionBudget>,
    /// Node name → keys of the pods bound to it.
    pods_on: HashMap<String, BTreeSet<String>>,
    /// The store revision the cache reflects.
    pub revision: Revision,
}

/// Decodes a stored object, giving it its resourceVersion.
fn decode<T: DeserializeOwned + Metadata<Ty = ObjectMeta>>(object: &Object) -> Option<Arc<T>> {
    match serde_json::from_slice::<T>(&object.value) {
        Ok(mut value) => {
            value.metadata_mut().resource_version = Some(object.mod_revision.to_string());
            Some(Arc::new(value))
        }
        Err(e) => {
            tracing::warn!(key = %object.key, "controllers skip an object they cannot read: {e}");
            None
        }
    }
}

fn put<T: DeserializeOwned + Metadata<Ty = ObjectMeta>>(
    objects: &mut Objects<T>,
    key: &str,
    stored: Option<&Object>,
) -> Delta<T> {
    let new = stored.and_then(decode::<T>);
    let old = objects.put(key, new.clone());
    Delta { old, new }
}

impl Cache {
    /// Applies a store write: `stored` is the object's new state, `None` when it was deleted.
    /// Returns the change when the object is of a cached kind.
    pub fn apply(&mut self, store_key: &str, stored: Option<&Object>) -> Option<Change> {
        let (r, namespace, name) = registry::by_key(store_key)?;
        let key = key(namespace, name);
        let change = match r.kind {
            "Pod" => {
                let delta = put(&mut self.pods, &key, stored);
                self.index_pod(&key, &delta);
                Change::Pod(delta)
            }
            "Node" => Change::Node(put(&mut self.nodes, &key, stored)),
            "Service" => Change::Service(put(&mut self.services, &key, stored)),
            "EndpointSlice" => Change::EndpointSlice(put(&mut self.slices, &key, stored)),
            "ReplicaSet" => Change::ReplicaSet(put(&mut self.replicasets, &key, stored)),
            "Deployment" => Change::Deployment(put(&mut self.deployments, &key, stored)),
            "DaemonSet" => Change::DaemonSet(put(&mut self.daemonsets, &key, stored)),
            "Lease" => Change::Lease(put(&mut self.leases, &key, stored)),
            "Job" => Change::Job(put(&mut self.jobs, &key, stored)),
            "CronJob" => Change::CronJob(put(&mut self.cronjobs, &key, stored)),
            "PodDisruptionBudget" => Change::PodDisruptionBudget(put(&mut self.budgets, &key, stored)),
            _ => return None,
        };
        Some(change)
    }

    fn index_pod(&mut self, key: &str, delta: &Delta<Pod>) {
        let node_of = |p: &Option<Arc<Pod>>| p.as_ref().and_then(|p| p.spec.as_ref()?.node_name.clone());
        let (old, new) = (node_of(&delta.old), node_of(&delta.new));
        if old == new {
            return;
        }
        if let Some(old) = old
            && let Some(keys) = self.pods_on.get_mut(&old)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.pods_on.remove(&old);
            }
        }
        if let Some(new) = new {
            self.pods_on.entry(new).or_default().insert(key.to_owned());
        }
    }

    /// The pods bound to `node`.
    pub fn pods_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
        self.pods_on.get(node).into_iter().flatten().filter_map(|k| self.pods.get(k))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stored(key: &str, rev: Revision, value: serde_json::Value) -> Object {
        Object {
            key: key.into(),
            value: value.to_string().into_bytes(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn pods_are_indexed_by_node_and_controller_and_carry_their_resource_version() {
        let mut cache = Cache::default();
        let key = "/registry/core/pods/ns/web-1";
        let owned = json!({"metadata": {"name": "web-1", "namespace": "ns", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]},
            "spec": {"containers": []}});
        let Some(Change::Pod(delta)) = cache.apply(key, Some(&stored(key, 7, owned.clone()))) else {
            panic!("a pod change")
        };
        assert!(delta.old.is_none());
        let pod = delta.new.expect("new pod");
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(cache.pods.controlled_by("rs-1").count(), 1);
        assert_eq!(cache.pods.uncontrolled_in("ns").count(), 0);
        assert_eq!(cache.pods.claimable("ns", "rs-1").count(), 1);
        assert_eq!(
            cache.pods.claimable("other", "rs-1").count(),
            0,
            "a controller claims in its own namespace"
        );
        assert_eq!(cache.pods.in_namespace("ns").count(), 1);
        assert_eq!(cache.pods.in_namespace("n").count(), 0, "namespace prefixes do not leak");
        assert_eq!(cache.pods_on("node-a").count(), 0);

        let mut bound = owned.clone();
        bound["spec"]["nodeName"] = json!("node-a");
        cache.apply(key, Some(&stored(key, 8, bound)));
        assert_eq!(cache.pods_on("node-a").count(), 1);

        let mut orphan = owned.clone();
        orphan["metadata"].as_object_mut().expect("meta").remove("ownerReferences");
        cache.apply(key, Some(&stored(key, 9, orphan)));
        assert_eq!(cache.pods.controlled_by("rs-1").count(), 0);
        assert_eq!(cache.pods.uncontrolled_in("ns").count(), 1, "released: an orphan now");
        assert_eq!(cache.pods.claimable("ns", "rs-1").count(), 1);

        let Some(Change::Pod(delta)) = cache.apply(key, None) else { panic!("a pod change") };
        assert!(delta.new.is_none() && delta.old.is_some());
        assert_eq!(cache.pods_on("node-a").count(), 0);
        assert_eq!(cache.pods.uncontrolled_in("ns").count(), 0);
        assert!(cache.pods.is_empty());
    }

    #[test]
    fn kinds_the_loops_do_not_read_are_not_cached() {
        let mut cache = Cache::default();
        let key = "/registry/core/configmaps/ns/c";
        assert!(cache.apply(key, Some(&stored(key, 1, json!({"metadata": {"name": "c"}})))).is_none());
    }
}
