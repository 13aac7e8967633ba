//! Planning for the EndpointSlice controller: given one Service, the pods in its namespace and
//! the slices labelled with its name, decide which slices to create, update and delete so the
//! slices list exactly the Service's endpoints. Pure (no store, no clock), so the controller
//! that calls it can re-run it on every change to the Service, its pods or its slices, and so
//! every rule is unit-tested here.
//!
//! The rules follow the upstream EndpointSlice controller (`k8s.io/endpointslice`):
//! - one endpoint per selected pod that has an IPv4 address and is not Succeeded/Failed;
//!   terminating pods stay in, flagged `terminating` (consumers may still drain to them);
//! - slices are grouped by their port list (a named `targetPort` can resolve differently per
//!   pod) and hold at most [`MAX_ENDPOINTS`] endpoints;
//! - churn is kept low: unchanged endpoints stay where they are, changes are made in place,
//!   new endpoints go into slices already being rewritten, then into slices that would
//!   otherwise be deleted, then into slices with room, and only then into new slices;
//! - a Service whose pods give no endpoints keeps one empty "placeholder" slice with no ports,
//!   so consumers can tell "no endpoints" from "not yet reconciled".
//!
//! Deliberate differences from upstream: a Service that loses its selector (or becomes
//! ExternalName) has the slices we made for it deleted (upstream leaves them, still routing to
//! the old pods); duplicate addresses within one port set are collapsed into one endpoint; a pod
//! on a node the caller does not know is still listed (see [`plan`]).

mod endpoints;
mod ports;
mod reconcile;
mod shape;
#[cfg(test)]
mod tests;

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};

pub use shape::{LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME};

/// The `endpointslice.kubernetes.io/managed-by` value on the slices this controller owns.
/// Slices with any other value (written by users or other controllers) are never touched.
pub const MANAGED_BY: &str = "skiff-control";

/// Endpoints per slice, upstream's default (`--max-endpoints-per-slice`): small enough that one
/// pod change rewrites a small object, large enough that most Services need one slice.
pub const MAX_ENDPOINTS: usize = 100;

/// What to write so a Service's slices match its pods.
///
/// Apply in order: `create`, then `update`, then `delete` (as upstream does), so consumers never
/// see a moment with fewer endpoints than before and after. Every entry is a whole object:
/// - `create`: POST as is; `metadata.generateName` is set and `metadata.name` is not, so the API
///   server picks the name.
/// - `update`: PUT (replace) each; each is a modified copy of an existing slice and carries its
///   `metadata.name` and `metadata.resourceVersion`, so a slice changed meanwhile makes the
///   write fail with a conflict instead of being overwritten.
/// - `delete`: slice names in the Service's namespace; "not found" means done.
///
/// After any failed write, re-plan from fresh state rather than retrying the rest: the plan is
/// only valid against the `existing` it was made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<String>,
}

impl Plan {
    /// True when the slices already match: nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Plans the slice writes for `service`.
///
/// - `pods`: the pods in the Service's namespace (any labels; the selector is applied here).
/// - `node_zone`: the `topology.kubernetes.io/zone` label of the named node, if it has one.
///   Upstream also drops pods whose node does not exist; this signature cannot tell a missing
///   node from an unlabelled one, so such pods are listed without a zone.
/// - `existing`: the slices labelled `kubernetes.io/service-name=<service>` in its namespace.
///   Only those managed by [`MANAGED_BY`] are considered; of those, ones being deleted are left
///   alone (as upstream does) and ones owned by another object (e.g. an earlier Service of the
///   same name) are deleted. A Service without a selector, or of type ExternalName, gets no
///   slices: the ones it owns are deleted and nothing else is touched. `existing` must include
///   this controller's own earlier writes, or the plan may create a slice again; a duplicate
///   made that way is emptied and deleted by the next plan.
pub fn plan(
    service: &Service,
    pods: &[&Pod],
    node_zone: impl Fn(&str) -> Option<String>,
    existing: &[&EndpointSlice],
) -> Plan {
    let ours: Vec<&EndpointSlice> = existing.iter().copied().filter(|s| shape::is_ours(s, service)).collect();
    if !shape::has_selector(service) {
        // Only slices this Service owns: the API server's bootstrap slice for the selector-less
        // `kubernetes` Service carries our managed-by label but no owner, and must stay.
        let owned = ours.iter().filter(|s| shape::owned_by(s, service));
        let mut delete: Vec<String> = owned.filter_map(|s| s.metadata.name.clone()).collect();
        delete.sort();
        return Plan { delete, ..Plan::default() };
    }
    let groups = endpoints::desired(service, pods, &node_zone);
    reconcile::reconcile(service, groups, ours)
}
