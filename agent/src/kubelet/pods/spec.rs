//! A pod container's process and limits: the image's entrypoint, command and environment with
//! the container's overrides (Kubernetes' rules), and resources as cgroup limits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;

use crate::runtime::{image::ImageConfig, oci::Limits};

/// `command` replaces the image's entrypoint (and drops its cmd); `args` replace the cmd.
pub fn argv(container: &Container, image: &ImageConfig) -> Vec<String> {
    let entrypoint = match &container.command {
        Some(command) if !command.is_empty() => {
            return [command.clone(), container.args.clone().unwrap_or_default()].concat();
        }
        _ => image.entrypoint.clone().unwrap_or_default(),
    };
    let args = match &container.args {
        Some(args) if !args.is_empty() => args.clone(),
        _ => image.cmd.clone().unwrap_or_default(),
    };
    [entrypoint, args].concat()
}

/// The image's environment, then `extra` (the node's and `envFrom`'s), then the container's
/// (later names win; `valueFrom` entries take their value from `resolved`), with `$(VAR)`
/// references to earlier variables expanded as Kubernetes does.
pub fn env(
    container: &Container,
    image: &ImageConfig,
    extra: &BTreeMap<String, String>,
    resolved: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let mut vars: Vec<(String, String)> = image
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let set = |name: String, value: String, vars: &mut Vec<(String, String)>| {
        if let Some(slot) = vars.iter_mut().find(|(k, _)| *k == name) {
            slot.1 = value;
        } else {
            vars.push((name, value));
        }
    };
    for (k, v) in extra {
        set(k.clone(), v.clone(), &mut vars);
    }
    for e in container.env.iter().flatten() {
        let value = match (&e.value_from, resolved.get(&e.name)) {
            (Some(_), Some(v)) => v.clone(),
            (Some(_), None) => continue,
            (None, _) => expand(e.value.as_deref().unwrap_or(""), &vars),
        };
        set(e.name.clone(), value, &mut vars);
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `$(NAME)` → the value of an earlier variable; `$$(NAME)` → a literal `$(NAME)`.
fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("$(") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("$(");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().rev().find(|(k, _)| k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => out.push_str(&format!("$({name})")),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A Kubernetes quantity in base units (`128Mi` → 134217728, `500m` → 0.5, `1e3` → 1000).
pub fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.strip_suffix('E').and_then(|n| n.parse::<f64>().ok()).map(|n| n * 1e18).or_else(|| text.parse().ok())
}

/// cgroup limits from the container's resources: limits.memory, requests.cpu as shares
/// (1024 per CPU, at least 2), limits.cpu as a quota per 100 ms.
pub fn limits(container: &Container) -> Limits {
    let resources = container.resources.as_ref();
    let get = |map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
               key: &str| { map.and_then(|m| m.get(key)).and_then(|q| quantity(&q.0)) };
    let (requests, limits) =
        (resources.and_then(|r| r.requests.as_ref()), resources.and_then(|r| r.limits.as_ref()));
    let cpu_request = get(requests, "cpu").or(get(limits, "cpu"));
    Limits {
        memory_bytes: get(limits, "memory").map(|b| b as i64),
        cpu_shares: cpu_request.map(|c| ((c * 1024.0) as u64).max(2)),
        cpu_quota_us: get(limits, "cpu").map(|c| ((c * 100_000.0) as i64).max(1000)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn command_and_args_override_the_image_as_kubernetes_says() {
        let image = ImageConfig {
            entrypoint: Some(vec!["ep".into()]),
            cmd: Some(vec!["c1".into()]),
            ..Default::default()
        };
        assert_eq!(argv(&container(json!({"name": "a"})), &image), ["ep", "c1"]);
        assert_eq!(argv(&container(json!({"name": "a", "args": ["x"]})), &image), ["ep", "x"]);
        assert_eq!(argv(&container(json!({"name": "a", "command": ["sh"]})), &image), ["sh"]);
        assert_eq!(
            argv(&container(json!({"name": "a", "command": ["sh"], "args": ["-c", "true"]})), &image),
            ["sh", "-c", "true"]
        );
    }

    #[test]
    fn env_merges_and_expands() {
        let image = ImageConfig { env: vec!["PATH=/bin".into(), "A=image".into()], ..Default::default() };
        let c = container(
            json!({"name": "a", "env": [{"name": "A", "value": "pod"}, {"name": "B", "value": "$(A)-$(PATH)-$$(A)-$(NOPE)"}]}),
        );
        assert_eq!(
            env(&c, &image, &BTreeMap::new(), &Default::default()),
            ["PATH=/bin", "A=pod", "B=pod-/bin-$(A)-$(NOPE)"]
        );
    }

    #[test]
    fn quantities_and_limits() {
        assert_eq!(quantity("128Mi"), Some(134_217_728.0));
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("1G"), Some(1e9));
        let c = container(
            json!({"name": "a", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "64Mi"}}}),
        );
        assert_eq!(
            limits(&c),
            Limits { memory_bytes: Some(64 << 20), cpu_shares: Some(256), cpu_quota_us: Some(100_000) }
        );
    }
}
