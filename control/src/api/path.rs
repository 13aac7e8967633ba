//! Request paths: `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced or not.

use super::registry::{self, Resource};

/// What a resource path addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// `group` and `version` of a path, and the segments after them.
pub fn split(path: &str) -> Option<(&str, &str, Vec<&str>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", version, rest @ ..] => Some(("", version, rest.to_vec())),
        ["apis", group, version, rest @ ..] => Some((group, version, rest.to_vec())),
        _ => None,
    }
}

/// Resolves a resource path; `None` if it names no served resource.
pub fn parse(path: &str) -> Option<Target> {
    let (group, version, rest) = split(path)?;
    let owned = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    // /namespaces/<ns>/<resource>[/<name>[/<sub>]]
    if let ["namespaces", ns, plural, tail @ ..] = rest.as_slice()
        && let Some(resource) = registry::find(group, version, plural).filter(|r| r.namespaced)
        && tail.len() <= 2
    {
        return Some(Target {
            resource,
            namespace: Some((*ns).to_owned()),
            name: owned(tail.first()),
            subresource: owned(tail.get(1)),
        });
    }
    // /<resource>[/<name>[/<sub>]]
    let (plural, tail) = rest.split_first()?;
    let resource = registry::find(group, version, plural)?;
    if tail.len() > 2 {
        return None;
    }
    Some(Target { resource, namespace: None, name: owned(tail.first()), subresource: owned(tail.get(1)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        let t = parse("/api/v1/namespaces/default/pods/web/status").expect("pod status");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse("/api/v1/namespaces/kube-system").expect("a namespace");
        assert_eq!((t.resource.plural, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = parse("/api/v1/namespaces/x/status").expect("namespace status");
        assert_eq!(
            (t.resource.plural, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let t = parse("/apis/discovery.k8s.io/v1/endpointslices").expect("all slices");
        assert_eq!((t.resource.plural, t.namespace), ("endpointslices", None));
        assert!(parse("/api/v1/widgets").is_none());
        assert!(parse("/apis/apps/v1/namespaces/a/deployments/b/scale/extra").is_none());
    }
}
