//! Server-side printing (`as=Table`): the columns `kubectl get` shows, computed here as the real API
//! server does, with `-o wide` columns at priority 1.

use serde_json::{Value, json};

use super::{registry::Resource, selector::format_labels};

/// (name, type, priority, description)
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = ("Name", "string", 0, "Name must be unique within a namespace.");
const AGE: Column = ("Age", "string", 0, "Time since creation.");

fn columns(kind: &str) -> Vec<Column> {
    let mut c = vec![NAME];
    c.extend(match kind {
        "Pod" => vec![
            ("Ready", "string", 0, "Ready containers / all containers"),
            ("Status", "string", 0, "The aggregate state of the containers"),
            ("Restarts", "string", 0, "Container restarts"),
            AGE,
            ("IP", "string", 1, "Pod IP"),
            ("Node", "string", 1, "Node the pod is bound to"),
            ("Nominated Node", "string", 1, "Nominated node"),
            ("Readiness Gates", "string", 1, "Readiness gates"),
        ],
        "CertificateSigningRequest" => vec![
            AGE,
            ("SignerName", "string", 0, "The signer asked for"),
            ("Requestor", "string", 0, "Who created the request"),
            ("RequestedDuration", "string", 0, "The lifetime asked for"),
            ("Condition", "string", 0, "Approved, Denied, Failed, Issued or Pending"),
        ],
        "Deployment" => vec![
            ("Ready", "string", 0, "Ready replicas / desired"),
            ("Up-to-date", "integer", 0, "Replicas running the latest template"),
            ("Available", "integer", 0, "Available replicas"),
            AGE,
            ("Containers", "string", 1, "Container names"),
            ("Images", "string", 1, "Container images"),
            ("Selector", "string", 1, "Label selector"),
        ],
        "ReplicaSet" => vec![
            ("Desired", "integer", 0, "Desired replicas"),
            ("Current", "integer", 0, "Current replicas"),
            ("Ready", "integer", 0, "Ready replicas"),
            AGE,
            ("Containers", "string", 1, "Container names"),
            ("Images", "string", 1, "Container images"),
            ("Selector", "string", 1, "Label selector"),
        ],
        "DaemonSet" => vec![
            ("Desired", "integer", 0, "Nodes that should run the pod"),
            ("Current", "integer", 0, "Nodes running it"),
            ("Ready", "integer", 0, "Nodes with it ready"),
            ("Up-to-date", "integer", 0, "Nodes running the latest template"),
            ("Available", "integer", 0, "Nodes with it available"),
            ("Node Selector", "string", 0, "Node selector"),
            AGE,
        ],
        "PriorityClass" => vec![
            ("Value", "integer", 0, "The priority pods of this class get"),
            ("Global-Default", "boolean", 0, "Whether pods without a class get this one"),
            AGE,
            ("PreemptionPolicy", "string", 0, "Whether pods of this class may preempt others"),
        ],
        "Service" => vec![
            ("Type", "string", 0, "Service type"),
            ("Cluster-IP", "string", 0, "ClusterIP"),
            ("External-IP", "string", 0, "External IPs"),
            ("Port(s)", "string", 0, "Ports"),
            AGE,
            ("Selector", "string", 1, "Label selector"),
        ],
        "Node" => vec![
            ("Status", "string", 0, "Node readiness"),
            ("Roles", "string", 0, "Node roles"),
            AGE,
            ("Version", "string", 0, "Kubelet version"),
            ("Internal-IP", "string", 1, "Internal address"),
            ("External-IP", "string", 1, "External address"),
        ],
        "EndpointSlice" => vec![
            ("AddressType", "string", 0, "Address type"),
            ("Ports", "string", 0, "Ports"),
            ("Endpoints", "string", 0, "Endpoint addresses"),
            AGE,
        ],
        "Namespace" => vec![("Status", "string", 0, "Phase"), AGE],
        "Job" => vec![
            ("Status", "string", 0, "Running, Complete, Failed or Suspended"),
            ("Completions", "string", 0, "Succeeded / desired completions"),
            ("Duration", "string", 0, "How long it ran"),
            AGE,
            ("Containers", "string", 1, "Container names"),
            ("Images", "string", 1, "Container images"),
            ("Selector", "string", 1, "Label selector"),
        ],
        "PodDisruptionBudget" => vec![
            ("Min Available", "string", 0, "Pods that must stay available"),
            ("Max Unavailable", "string", 0, "Pods that may be unavailable"),
            ("Allowed Disruptions", "integer", 0, "Evictions allowed now"),
            AGE,
        ],
        "CronJob" => vec![
            ("Schedule", "string", 0, "The cron schedule"),
            ("Timezone", "string", 0, "The schedule's time zone"),
            ("Suspend", "boolean", 0, "Whether new runs are suspended"),
            ("Active", "integer", 0, "Jobs running"),
            ("Last Schedule", "string", 0, "When a Job was last started"),
            AGE,
        ],
        "ResourceQuota" => vec![
            AGE,
            ("Request", "string", 0, "Used / hard of the quota's other resources"),
            ("Limit", "string", 0, "Used / hard of the quota's limits.* resources"),
        ],
        _ => vec![AGE],
    });
    c
}

/// kubectl's short, human age ("45s", "3m12s", "5h", "12d").
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y{}d", d / 365, d % 365),
    }
}

fn age(o: &Value) -> String {
    let created = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    created
        .map_or_else(|| "<unknown>".into(), |c| human_age(jiff::Timestamp::now().as_second() - c.as_second()))
}

fn s(o: &Value, ptr: &str) -> String {
    o.pointer(ptr)
        .map(|v| match v {
            Value::String(x) => x.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

fn n(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".into() } else { text }
}

fn arr<'a>(o: &'a Value, ptr: &str) -> &'a [Value] {
    o.pointer(ptr).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn join(items: &[Value], field: &str) -> String {
    items.iter().filter_map(|i| i.get(field).and_then(Value::as_str)).collect::<Vec<_>>().join(",")
}

fn selector(o: &Value) -> String {
    or_none(format_labels(o.pointer("/spec/selector/matchLabels").or_else(|| o.pointer("/spec/selector"))))
}

fn or(text: String, default: &str) -> String {
    if text.is_empty() { default.into() } else { text }
}

fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    for cs in arr(o, "/status/containerStatuses") {
        if let Some(reason) = cs.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return reason.into();
        }
    }
    let reason = s(o, "/status/reason");
    if reason.is_empty() { or(s(o, "/status/phase"), "Pending") } else { reason }
}

fn time(o: &Value, ptr: &str) -> Option<jiff::Timestamp> {
    o.pointer(ptr).and_then(Value::as_str).and_then(|t| t.parse().ok())
}

/// A Job's state as kubectl prints it: the terminal condition, else Suspended or Running.
fn job_status(o: &Value) -> &'static str {
    let has = |t: &str| arr(o, "/status/conditions").iter().any(|c| c["type"] == t && c["status"] == "True");
    match () {
        _ if has("Complete") => "Complete",
        _ if has("Failed") => "Failed",
        _ if has("Suspended") => "Suspended",
        _ if has("FailureTarget") => "FailureTarget",
        _ if has("SuccessCriteriaMet") => "SuccessCriteriaMet",
        _ => "Running",
    }
}

fn job_cells(o: &Value) -> [Value; 7] {
    let template = "/spec/template/spec/containers";
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{}/{c}", n(o, "/status/succeeded")),
        None => format!("{}/1 of {}", n(o, "/status/succeeded"), n(o, "/spec/parallelism")),
    };
    let duration = time(o, "/status/startTime").map_or_else(String::new, |start| {
        let end = time(o, "/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
        human_age(end.as_second() - start.as_second())
    });
    [
        json!(job_status(o)),
        json!(completions),
        json!(duration),
        json!(age(o)),
        json!(join(arr(o, template), "name")),
        json!(join(arr(o, template), "image")),
        json!(selector(o)),
    ]
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let mut c = vec![name];
    let template = "/spec/template/spec/containers";
    match kind {
        "Pod" => {
            let statuses = arr(o, "/status/containerStatuses");
            let ready = statuses.iter().filter(|c| c.get("ready") == Some(&json!(true))).count();
            let total = arr(o, "/spec/containers").len();
            let restarts: i64 =
                statuses.iter().map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0)).sum();
            c.extend([
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o)),
                json!(or_none(s(o, "/status/podIP"))),
                json!(or_none(s(o, "/spec/nodeName"))),
                json!(or_none(s(o, "/status/nominatedNodeName"))),
                json!("<none>"),
            ]);
        }
        "CertificateSigningRequest" => {
            let mut conditions: Vec<String> = arr(o, "/status/conditions")
                .iter()
                .filter(|c| c.get("status") == Some(&json!("True")))
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(str::to_owned))
                .collect();
            if !s(o, "/status/certificate").is_empty() {
                conditions.push("Issued".into());
            }
            let duration = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map_or_else(|| "<none>".to_owned(), |secs| format!("{}h", secs / 3600));
            c.extend([
                json!(age(o)),
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(if conditions.is_empty() { "Pending".to_owned() } else { conditions.join(",") }),
            ]);
        }
        "Job" => c.extend(job_cells(o)),
        "PodDisruptionBudget" => c.extend([
            json!(or(s(o, "/spec/minAvailable"), "N/A")),
            json!(or(s(o, "/spec/maxUnavailable"), "N/A")),
            json!(n(o, "/status/disruptionsAllowed")),
            json!(age(o)),
        ]),
        "CronJob" => c.extend([
            json!(s(o, "/spec/schedule")),
            json!(or_none(s(o, "/spec/timeZone"))),
            json!(o.pointer("/spec/suspend") == Some(&json!(true))),
            json!(arr(o, "/status/active").len()),
            json!(time(o, "/status/lastScheduleTime").map_or_else(
                || "<none>".to_owned(),
                |t| human_age(jiff::Timestamp::now().as_second() - t.as_second())
            )),
            json!(age(o)),
        ]),
        "Deployment" => c.extend([
            json!(format!("{}/{}", n(o, "/status/readyReplicas"), n(o, "/spec/replicas"))),
            json!(n(o, "/status/updatedReplicas")),
            json!(n(o, "/status/availableReplicas")),
            json!(age(o)),
            json!(join(arr(o, template), "name")),
            json!(join(arr(o, template), "image")),
            json!(selector(o)),
        ]),
        "ReplicaSet" => c.extend([
            json!(n(o, "/spec/replicas")),
            json!(n(o, "/status/replicas")),
            json!(n(o, "/status/readyReplicas")),
            json!(age(o)),
            json!(join(arr(o, template), "name")),
            json!(join(arr(o, template), "image")),
            json!(selector(o)),
        ]),
        "DaemonSet" => c.extend([
            json!(n(o, "/status/desiredNumberScheduled")),
            json!(n(o, "/status/currentNumberScheduled")),
            json!(n(o, "/status/numberReady")),
            json!(n(o, "/status/updatedNumberScheduled")),
            json!(n(o, "/status/numberAvailable")),
            json!(or_none(format_labels(o.pointer("/spec/template/spec/nodeSelector")))),
            json!(age(o)),
        ]),
        "PriorityClass" => c.extend([
            json!(n(o, "/value")),
            json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            json!(age(o)),
            json!(s(o, "/preemptionPolicy")),
        ]),
        "Service" => {
            let ports = arr(o, "/spec/ports")
                .iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                        None => format!("{}/{proto}", n(p, "/port")),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let external: Vec<String> = arr(o, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str).map(str::to_owned))
                .chain(arr(o, "/spec/externalIPs").iter().filter_map(|i| i.as_str().map(str::to_owned)))
                .collect();
            let ty = s(o, "/spec/type");
            c.extend([
                json!(if ty.is_empty() { "ClusterIP".into() } else { ty }),
                json!(or_none(s(o, "/spec/clusterIP"))),
                json!(or_none(external.join(","))),
                json!(or_none(ports)),
                json!(age(o)),
                json!(selector(o)),
            ]);
        }
        "Node" => {
            let ready = arr(o, "/status/conditions")
                .iter()
                .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True")));
            let mut status = if ready { "Ready".to_owned() } else { "NotReady".to_owned() };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| l.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
                .unwrap_or_default();
            let address = |kind: &str| {
                arr(o, "/status/addresses")
                    .iter()
                    .find(|a| a.get("type") == Some(&json!(kind)))
                    .map(|a| s(a, "/address"))
                    .unwrap_or_default()
            };
            c.extend([
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age(o)),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(or_none(address("InternalIP"))),
                json!(or_none(address("ExternalIP"))),
            ]);
        }
        "EndpointSlice" => {
            let addresses: Vec<String> = arr(o, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter().filter_map(|a| a.as_str().map(str::to_owned)))
                .collect();
            let shown = if addresses.len() > 3 {
                format!("{} + {} more...", addresses[..3].join(","), addresses.len() - 3)
            } else {
                addresses.join(",")
            };
            c.extend([
                json!(s(o, "/addressType")),
                json!(or_none(
                    arr(o, "/ports").iter().map(|p| n(p, "/port").to_string()).collect::<Vec<_>>().join(",")
                )),
                json!(or_none(shown)),
                json!(age(o)),
            ]);
        }
        "Namespace" => c.extend([json!(or(s(o, "/status/phase"), "Active")), json!(age(o))]),
        "ResourceQuota" => {
            let (request, limit) = super::admission::quota::table_usage(o);
            c.extend([json!(age(o)), json!(request), json!(limit)]);
        }
        _ => c.push(json!(age(o))),
    }
    c
}

fn row(r: &Resource, o: &Value, include: &str) -> Value {
    let object = match include {
        "None" => Value::Null,
        "Object" => o.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
        }
    };
    json!({"cells": cells(r.kind, o), "object": object})
}

/// A Table of `objects`.
pub fn table(r: &Resource, objects: &[Value], resource_version: Option<String>, include: &str) -> Value {
    let columns: Vec<Value> = columns(r.kind)
        .into_iter()
        .map(|(name, kind, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": objects.iter().map(|o| row(r, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (secs, want) in [
            (5, "5s"),
            (119, "119s"),
            (190, "3m10s"),
            (600, "10m"),
            (7200, "120m"),
            (3 * 3600 + 600, "3h10m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (40 * 86400, "40d"),
        ] {
            assert_eq!(human_age(secs), want, "{secs}");
        }
    }

    #[test]
    fn service_and_pod_cells() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let c = cells("Service", &svc);
        assert_eq!(
            c[..5],
            [
                json!("web"),
                json!("ClusterIP"),
                json!("10.96.0.5"),
                json!("<none>"),
                json!("80/TCP,53:30053/UDP")
            ]
        );
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{}, {}], "nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.244.0.3", "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells("Pod", &pod);
        assert_eq!(c[..4], [json!("p"), json!("1/2"), json!("CrashLoopBackOff"), json!("3")]);
    }
}
