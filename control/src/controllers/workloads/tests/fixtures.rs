//! Small builders for the objects the tests feed in.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{
            Deployment, DeploymentSpec, DeploymentStrategy, ReplicaSet, ReplicaSetSpec,
            RollingUpdateDeployment,
        },
        core::v1::{Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time},
        util::intstr::IntOrString,
    },
};

pub const NS: &str = "ns";

/// A fixed instant plus `seconds`, so tests never read the real clock.
pub fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).expect("in range")
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: Some(labels(pairs)), match_expressions: None }
}

/// A running, scheduled, not yet ready pod created at `t(0)`.
pub fn pod(name: &str, pairs: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some(format!("uid-{name}")),
            labels: Some(labels(pairs)),
            creation_timestamp: Some(Time(t(0))),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec { node_name: Some("n1".into()), ..PodSpec::default() }),
        status: Some(PodStatus { phase: Some("Running".into()), ..PodStatus::default() }),
    }
}

/// `pod` with its Ready condition True since `since`.
pub fn ready(mut pod: Pod, since: Timestamp) -> Pod {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "Ready");
    conditions.push(PodCondition {
        type_: "Ready".into(),
        status: "True".into(),
        last_transition_time: Some(Time(since)),
        ..PodCondition::default()
    });
    pod
}

pub fn phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status.get_or_insert_with(PodStatus::default).phase = Some(phase.to_owned());
    pod
}

pub fn node(mut pod: Pod, node: &str) -> Pod {
    pod.spec.get_or_insert_with(PodSpec::default).node_name = (!node.is_empty()).then(|| node.to_owned());
    pod
}

pub fn created(mut pod: Pod, at: Timestamp) -> Pod {
    pod.metadata.creation_timestamp = Some(Time(at));
    pod
}

pub fn restarts(mut pod: Pod, count: i32) -> Pod {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.container_statuses =
        Some(vec![ContainerStatus { restart_count: count, ..ContainerStatus::default() }]);
    pod
}

pub fn deleting(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(t(0)));
    pod
}

pub fn controlled_by(mut pod: Pod, kind: &str, uid: &str) -> Pod {
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.to_owned(),
        name: format!("owner-{uid}"),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    pod
}

pub fn template(pairs: &[(&str, &str)], image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels(pairs)), ..ObjectMeta::default() }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

/// A ReplicaSet selecting and templating `app=web`.
pub fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NS.to_owned()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            selector: selector(&[("app", "web")]),
            template: Some(template(&[("app", "web")], "web:1")),
            min_ready_seconds: None,
        },
        status: None,
    }
}

/// A RollingUpdate Deployment of `app=web` with the given image and fenceposts.
pub fn deployment(replicas: i32, image: &str, surge: IntOrString, unavailable: IntOrString) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some(NS.to_owned()),
            uid: Some("uid-deploy-web".into()),
            generation: Some(1),
            creation_timestamp: Some(Time(t(0))),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(&[("app", "web")]),
            template: template(&[("app", "web")], image),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// A Recreate Deployment of `app=web`.
pub fn recreate_deployment(replicas: i32, image: &str) -> Deployment {
    let mut d = deployment(replicas, image, IntOrString::Int(0), IntOrString::Int(0));
    d.spec.strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
    d
}

/// The image of a pod's (or template's) only container.
pub fn image_of(spec: Option<&PodSpec>) -> String {
    spec.and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}
