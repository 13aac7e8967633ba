//! Events for a pod's notable moments (Pulling, Pulled, Created, Started, Killing, BackOff,
//! Unhealthy, Failed…), as the kubelet records them, so `kubectl describe pod` tells the story.
//! The same event for the same pod within a minute is recorded once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{Api, Client, api::PostParams};
use serde_json::json;

const REPEAT: Duration = Duration::from_secs(60);

/// (pod uid, reason, message) → when it was last recorded.
type Seen = HashMap<(String, String, String), Instant>;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
    recent: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("node", &self.node).finish()
    }
}

impl Recorder {
    pub fn new(client: Client, node: &str) -> Self {
        Self { client, node: node.to_owned(), recent: Default::default() }
    }

    /// Records a Normal event.
    pub fn normal(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        self.record(pod, "Normal", reason, message.into());
    }

    /// Records a Warning event.
    pub fn warning(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        self.record(pod, "Warning", reason, message.into());
    }

    fn record(&self, pod: &Pod, kind: &str, reason: &str, message: String) {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.retain(|_, at| at.elapsed() < REPEAT);
            if recent.insert((uid.clone(), reason.to_owned(), message.clone()), Instant::now()).is_some() {
                return;
            }
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let event = json!({
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "skiff-agent", "host": self.node},
            "reportingComponent": "skiff-agent",
            "reportingInstance": self.node,
        });
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            let Ok(event) = serde_json::from_value::<Event>(event) else { return };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!("recording an event: {e}");
            }
        });
    }
}
