//! The parts of a slice that come from its Service rather than its pods: labels, owner, name
//! prefix, address type; and which existing slices are ours to change.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::MANAGED_BY;

/// Names the Service a slice belongs to; consumers (kube-proxy, DNS, our agent) select on it.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Names the controller that writes a slice, so several can share a Service without fighting.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Set (empty value) on slices of Services without a cluster IP, so DNS can tell them apart.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The only address type we produce: the cluster is IPv4-only.
pub(super) const ADDRESS_TYPE: &str = "IPv4";

/// Whether a Service gets endpoints from its pods. ExternalName Services never do (upstream,
/// issue 105986). An empty selector counts as none: upstream's API server drops an empty
/// `selector` when it serialises (omitempty), so clusters never tell the two apart, and reading
/// `{}` as "every pod in the namespace" would be a surprise.
pub(super) fn has_selector(service: &Service) -> bool {
    let Some(spec) = &service.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName") && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// A slice this controller manages for `service`: our managed-by label, the Service's name label,
/// same namespace, and not already being deleted (upstream skips those so a slice stuck on a
/// finalizer cannot wedge the Service; its endpoints are simply placed elsewhere).
pub(super) fn is_ours(slice: &EndpointSlice, service: &Service) -> bool {
    let meta = &slice.metadata;
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str);
    label(LABEL_MANAGED_BY) == Some(MANAGED_BY)
        && label(LABEL_SERVICE_NAME) == service.metadata.name.as_deref()
        && meta.namespace == service.metadata.namespace
        && meta.deletion_timestamp.is_none()
}

/// Whether `slice` names this very Service object (by uid) as an owner. A slice left by a
/// deleted Service of the same name is not, and must not be adopted: the garbage collector is
/// about to delete it, and would delete it even after we refilled it.
pub(super) fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let Some(uid) = &service.metadata.uid else { return false };
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| &o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// The labels every slice of `service` carries: the Service's own labels (so slices can be
/// selected like their Service) minus the reserved keys, which are then set by us.
pub(super) fn labels(service: &Service) -> BTreeMap<String, String> {
    let reserved = [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS];
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    if cluster_ip.is_empty() || cluster_ip == "None" {
        labels.insert(LABEL_HEADLESS.to_owned(), String::new());
    }
    labels.insert(LABEL_SERVICE_NAME.to_owned(), service.metadata.name.clone().unwrap_or_default());
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// A new, empty slice for `service`. The name is left to the API server (`generateName`), so
/// slices never collide with each other or with ones other writers name.
pub(super) fn new_slice(service: &Service) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    let owner = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: name.clone(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels(service)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        address_type: ADDRESS_TYPE.to_owned(),
        endpoints: Some(Vec::new()),
        ports: Some(Vec::new()),
    }
}
