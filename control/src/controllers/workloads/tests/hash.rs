//! The pod-template-hash.

use std::collections::BTreeMap;

use super::fixtures::template;
use crate::controllers::workloads::{
    POD_TEMPLATE_HASH_LABEL,
    hash::{equal_ignoring_hash, pod_template_hash},
};

const ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

#[test]
fn hash_is_pinned_so_it_stays_stable_across_versions() {
    // Changing this value renames every Deployment's ReplicaSets on upgrade: a rollout of
    // every Deployment at once. Only change it on purpose.
    // Canonical text: {"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"web:1","name":"app"}]}}
    assert_eq!(pod_template_hash(&template(&[("app", "web")], "web:1"), None), "b768wll");
}

#[test]
fn hash_uses_the_safe_alphabet_and_a_fixed_length() {
    for image in ["a", "b", "web:1", "web:2", "registry.example/x@sha256:00"] {
        let h = pod_template_hash(&template(&[("app", "web")], image), None);
        assert_eq!(h.len(), 7, "{h}");
        assert!(h.chars().all(|c| ALPHABET.contains(c)), "{h}");
    }
}

#[test]
fn hash_ignores_its_own_label_and_empty_fields() {
    let plain = template(&[("app", "web")], "web:1");
    let mut labelled = plain.clone();
    let meta = labelled.metadata.as_mut().expect("metadata");
    meta.labels.get_or_insert_with(BTreeMap::new).insert(POD_TEMPLATE_HASH_LABEL.into(), "xyz".into());
    meta.annotations = Some(BTreeMap::new());
    assert_eq!(pod_template_hash(&plain, None), pod_template_hash(&labelled, None));
    assert!(equal_ignoring_hash(&plain, &labelled));
}

#[test]
fn hash_changes_with_the_template_and_the_collision_count() {
    let a = template(&[("app", "web")], "web:1");
    let b = template(&[("app", "web")], "web:2");
    assert_ne!(pod_template_hash(&a, None), pod_template_hash(&b, None));
    assert!(!equal_ignoring_hash(&a, &b));
    assert_ne!(pod_template_hash(&a, None), pod_template_hash(&a, Some(1)));
    assert_ne!(pod_template_hash(&a, Some(1)), pod_template_hash(&a, Some(2)));
    assert_eq!(pod_template_hash(&a, None), pod_template_hash(&a, Some(0)), "unset and 0 are the same count");
}
