//! Why a pod fits no node, worded and counted exactly like kube-scheduler's `FitError`, so
//! `kubectl describe pod` shows the familiar `0/3 nodes are available: 2 Insufficient cpu, …`.

use std::fmt;

/// The message upstream gives when the cluster has no nodes at all (`ErrNoNodesAvailable`).
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// Upstream NodeAffinity PreFilter's reason when the node-name terms exclude every name.
pub(crate) const TERMS_CONFLICT: &str = "pod affinity terms conflict";

/// Why one node was rejected. Borrowed strings point into the node or the pod, so counting
/// rejections over thousands of nodes allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason<'a> {
    /// NodeUnschedulable: the node is cordoned.
    Unschedulable,
    /// NodeName: `spec.nodeName` names another node.
    NodeName,
    /// TaintToleration: the first `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    UntoleratedTaint { key: &'a str, value: &'a str },
    /// NodeAffinity: `nodeSelector` or required node affinity.
    NodeAffinity,
    /// NodeAffinity PreFilter: the node is not among those named by `matchFields`.
    NotInNameSet,
    /// NodePorts: a wanted host port is taken.
    NodePorts,
    /// NodeResourcesFit: the node is at `allocatable.pods`.
    TooManyPods,
    /// NodeResourcesFit: not enough of this resource left.
    Insufficient(&'a str),
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unschedulable => f.write_str("node(s) were unschedulable"),
            Self::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Self::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Self::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Self::NotInNameSet => f.write_str("node(s) didn't satisfy plugin(s) [NodeAffinity]"),
            Self::NodePorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Self::TooManyPods => f.write_str("Too many pods"),
            Self::Insufficient(resource) => write!(f, "Insufficient {resource}"),
        }
    }
}

/// Rejections counted by reason while nodes are filtered.
#[derive(Debug, Default)]
pub(crate) struct Tally<'a> {
    counts: Vec<(Reason<'a>, usize)>,
}

impl<'a> Tally<'a> {
    pub(crate) fn add(&mut self, reason: Reason<'a>) {
        self.add_many(reason, 1);
    }

    pub(crate) fn add_many(&mut self, reason: Reason<'a>, nodes: usize) {
        if nodes == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += nodes,
            None => self.counts.push((reason, nodes)),
        }
    }

    /// The error for a pod that fits none of `num_all_nodes` nodes.
    pub(crate) fn into_error(self, num_all_nodes: usize) -> FitError {
        let mut reasons: Vec<(String, usize)> = Vec::with_capacity(self.counts.len());
        for (reason, n) in self.counts {
            let text = reason.to_string();
            // Different taints can share a key and value; their counts merge like upstream's map.
            match reasons.iter_mut().find(|(t, _)| *t == text) {
                Some((_, m)) => *m += n,
                None => reasons.push((text, n)),
            }
        }
        // Upstream sorts the printed "<count> <reason>" strings, count included.
        reasons.sort_by_cached_key(|(text, n)| format!("{n} {text}"));
        FitError { num_all_nodes, pre_filter: None, reasons }
    }
}

/// A pod fits no node. `Display` gives kube-scheduler's message, for the `FailedScheduling`
/// event and the pod's `PodScheduled` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    num_all_nodes: usize,
    /// A reason that applied to the pod as a whole, before any node was examined.
    pre_filter: Option<String>,
    reasons: Vec<(String, usize)>,
}

impl FitError {
    /// The cluster has no nodes.
    pub(crate) fn no_nodes() -> Self {
        Self { num_all_nodes: 0, pre_filter: None, reasons: Vec::new() }
    }

    /// The pod was rejected before any node was examined; every node counts under `message`.
    pub(crate) fn before_filtering(num_all_nodes: usize, message: &str) -> Self {
        Self {
            num_all_nodes,
            pre_filter: Some(message.to_string()),
            reasons: vec![(message.to_string(), num_all_nodes)],
        }
    }

    /// How many nodes the cluster had.
    pub fn num_all_nodes(&self) -> usize {
        self.num_all_nodes
    }

    /// Each reason with the number of nodes it rejected, in the order the message prints them.
    pub fn reasons(&self) -> &[(String, usize)] {
        &self.reasons
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 {
            return f.write_str(NO_NODES_MESSAGE);
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(message) = &self.pre_filter {
            return write!(f, " {message}.");
        }
        for (i, (text, n)) in self.reasons.iter().enumerate() {
            let separator = if i == 0 { " " } else { ", " };
            write!(f, "{separator}{n} {text}")?;
        }
        if !self.reasons.is_empty() {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_upstream() {
        let mut tally = Tally::default();
        tally.add(Reason::Insufficient("cpu"));
        tally.add(Reason::UntoleratedTaint { key: "node.kubernetes.io/unreachable", value: "" });
        tally.add(Reason::Insufficient("cpu"));
        let err = tally.into_error(3);
        // As kube-scheduler prints it: "1 node(s) …" sorts before "2 Insufficient cpu".
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/unreachable: }, 2 Insufficient cpu."
        );
        assert_eq!(err.num_all_nodes(), 3);
        assert_eq!(
            err.reasons(),
            [
                ("node(s) had untolerated taint {node.kubernetes.io/unreachable: }".to_string(), 1),
                ("Insufficient cpu".to_string(), 2),
            ]
        );
    }

    #[test]
    fn sorted_by_the_printed_text_count_first() {
        let mut tally = Tally::default();
        tally.add_many(Reason::Unschedulable, 2);
        tally.add_many(Reason::TooManyPods, 10);
        tally.add_many(Reason::Insufficient("memory"), 2);
        tally.add_many(Reason::NodePorts, 0);
        let err = tally.into_error(14);
        // "10 …" sorts before "2 …" as strings, as in upstream's sort.Strings.
        assert_eq!(
            err.to_string(),
            "0/14 nodes are available: 10 Too many pods, 2 Insufficient memory, 2 node(s) were unschedulable."
        );
    }

    #[test]
    fn every_reason_text() {
        let cases = [
            (Reason::Unschedulable, "node(s) were unschedulable"),
            (Reason::NodeName, "node(s) didn't match the requested node name"),
            (Reason::UntoleratedTaint { key: "k", value: "v" }, "node(s) had untolerated taint {k: v}"),
            (Reason::NodeAffinity, "node(s) didn't match Pod's node affinity/selector"),
            (Reason::NotInNameSet, "node(s) didn't satisfy plugin(s) [NodeAffinity]"),
            (Reason::NodePorts, "node(s) didn't have free ports for the requested pod ports"),
            (Reason::TooManyPods, "Too many pods"),
            (Reason::Insufficient("example.com/foo"), "Insufficient example.com/foo"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn special_forms() {
        assert_eq!(FitError::no_nodes().to_string(), "no nodes available to schedule pods");
        let err = FitError::before_filtering(4, TERMS_CONFLICT);
        assert_eq!(err.to_string(), "0/4 nodes are available: pod affinity terms conflict.");
        assert_eq!(err.reasons(), [(TERMS_CONFLICT.to_string(), 4)]);
        assert_eq!(Tally::default().into_error(2).to_string(), "0/2 nodes are available:");
    }
}
