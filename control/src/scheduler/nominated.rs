//! Nominated pods: a preemptor waits for its victims to leave with `status.nominatedNodeName`
//! set, and the room they free is its. Like upstream, while filtering a pod on a node the pods
//! nominated there with at least the same priority are counted as if they ran there, so a
//! lower- or equal-priority pod never takes room made for a more important one (a more
//! important pod may: it would have been allowed to preempt the nominee anyway).

use k8s_openapi::api::core::v1::Pod;

use super::{
    cluster::Cluster,
    filter::{node_ports, node_resources_fit, passes},
    fit_error::Tally,
    node::NodeInfo,
    pod::{Usage, Wanted, pod_key},
};

/// A pod nominated to a node.
#[derive(Debug, Clone)]
pub(crate) struct Nominee {
    pub node: String,
    pub usage: Usage,
}

impl Cluster {
    /// Records that `pod` waits for room on `node` (its `status.nominatedNodeName`), replacing
    /// an earlier nomination of it.
    pub fn nominate(&mut self, node: &str, pod: &Pod) {
        self.nominated.insert(pod_key(pod), Nominee { node: node.to_owned(), usage: Usage::of(pod) });
    }

    /// Drops the nomination of the pod `namespace/name` (bound, gone, or nominated nowhere any
    /// more); true if there was one.
    pub fn unnominate(&mut self, namespace: &str, name: &str) -> bool {
        self.nominated.remove(&format!("{namespace}/{name}")).is_some()
    }

    /// The node the pod `namespace/name` is nominated to.
    pub fn nominated_node(&self, namespace: &str, name: &str) -> Option<&str> {
        self.nominated.get(&format!("{namespace}/{name}")).map(|n| n.node.as_str())
    }

    /// Every filter passes on `info` (a live node or a what-if copy of one), also with the
    /// pods nominated to it that are at least as important as the pod counted there.
    pub(super) fn fits<'a>(&self, info: &'a NodeInfo, wanted: &'a Wanted<'_>, tally: &mut Tally<'a>) -> bool {
        if !passes(info, wanted, tally) {
            return false;
        }
        if self.nominated.is_empty() {
            return true;
        }
        let mut ahead = self
            .nominated
            .iter()
            .filter(|(key, n)| {
                n.node == info.name() && n.usage.priority >= wanted.usage.priority && **key != wanted.key
            })
            .peekable();
        if ahead.peek().is_none() {
            return true;
        }
        let mut with_nominees = info.clone();
        for (_, nominee) in ahead {
            with_nominees.add(&nominee.usage);
        }
        if let Some(reason) = node_ports(&with_nominees, wanted) {
            tally.add(reason);
            return false;
        }
        node_resources_fit(&with_nominees, wanted, |reason| tally.add(reason))
    }

    /// Whether `pod` fits on the node `name` now (nominees counted): a nominated pod tries its
    /// node first.
    pub fn fits_on(&self, name: &str, pod: &Pod) -> bool {
        let (Some(spec), Some(slot)) = (pod.spec.as_ref(), self.slot_of(name)) else { return false };
        let Some(info) = self.live(slot) else { return false };
        let wanted = Wanted::new(pod, spec);
        self.fits(info, &wanted, &mut Tally::default())
    }
}
