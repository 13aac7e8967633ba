//! Controller ownership: which object controls which, and how a controller claims objects.
//!
//! A workload owns what carries its `controller: true` ownerReference. It adopts orphans its
//! selector matches and releases what it owns but no longer selects, the way upstream's
//! `ControllerRefManager` does, so two controllers never fight over one object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::selector;

/// The ownerReference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with uid `owner_uid`.
pub fn is_controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == owner_uid)
}

/// The ownerReference a controller puts on what it creates or adopts. `blockOwnerDeletion`
/// makes a foreground deletion of the owner wait for it.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What a controller does about one object it looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Already controlled by it and still selected.
    Owned,
    /// An orphan it selects: the caller adds the controller reference.
    Adopt,
    /// Controlled by it but no longer selected: the caller removes the controller reference.
    Release,
    /// Someone else's, not selected, or not to be touched now.
    Ignore,
}

/// Decides [`Claim`] for `object` against the controller `owner` with `selector`.
///
/// A controller being deleted keeps what it owns (claiming that takes no action) but adopts and
/// releases nothing; an object being deleted is never adopted; a controller without a uid (not
/// yet stored) can own nothing.
pub fn claim(owner: &ObjectMeta, selector: &LabelSelector, object: &ObjectMeta) -> Claim {
    let Some(uid) = owner.uid.as_deref() else { return Claim::Ignore };
    let owner_deleting = owner.deletion_timestamp.is_some();
    let selected = selector::matches(selector, object.labels.as_ref());
    match controller_of(object) {
        Some(r) if r.uid != uid => Claim::Ignore,
        Some(_) if selected => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if !selected || owner_deleting || object.deletion_timestamp.is_some() => Claim::Ignore,
        None if owner.namespace.is_some() && owner.namespace != object.namespace => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// The outcome of claiming a list of objects, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Controlled after the claim: already owned plus adopted.
    pub owned: Vec<String>,
    /// Orphans to adopt (also listed in `owned`).
    pub adopt: Vec<String>,
    /// Objects to release (not in `owned`).
    pub release: Vec<String>,
}

/// Claims each of `objects` for `owner`, in the order given.
pub fn claim_all<'a>(
    owner: &ObjectMeta,
    selector: &LabelSelector,
    objects: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Claimed {
    let mut out = Claimed::default();
    for meta in objects {
        let name = meta.name.clone().unwrap_or_default();
        match claim(owner, selector, meta) {
            Claim::Owned => out.owned.push(name),
            Claim::Adopt => {
                out.owned.push(name.clone());
                out.adopt.push(name);
            }
            Claim::Release => out.release.push(name),
            Claim::Ignore => {}
        }
    }
    out
}
