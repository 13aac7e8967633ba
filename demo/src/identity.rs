//! Who is answering: the pod's name, IP and node, from the environment the pod spec sets through
//! the downward API (`POD_NAME`, `POD_NAMESPACE`, `POD_IP`, `NODE_NAME`). The name falls back to the
//! hostname, which a container runtime sets to the pod name anyway.

/// The serving pod, as reported in every HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub pod: String,
    pub namespace: Option<String>,
    pub ip: Option<String>,
    pub node: Option<String>,
}

impl Identity {
    /// Reads the identity from the process environment.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let hostname = || {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into())
        };
        Self {
            pod: var("POD_NAME").unwrap_or_else(hostname),
            namespace: var("POD_NAMESPACE"),
            ip: var("POD_IP"),
            node: var("NODE_NAME"),
        }
    }

    /// The JSON body of an answer to `client` for `path`, one line.
    pub fn json(&self, client: &str, path: &str) -> String {
        let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "null".to_owned(), quote);
        format!(
            "{{\"pod\":{},\"namespace\":{},\"podIP\":{},\"node\":{},\"client\":{},\"path\":{}}}\n",
            quote(&self.pod),
            opt(&self.namespace),
            opt(&self.ip),
            opt(&self.node),
            quote(client),
            quote(path),
        )
    }
}

/// A JSON string literal (RFC 8259 escaping), so no serde_json is needed.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_and_nulls() {
        let id =
            Identity { pod: "web-\"1\"".into(), namespace: None, ip: Some("10.0.0.2".into()), node: None };
        assert_eq!(
            id.json("127.0.0.1:5000", "/a\\b\u{1}"),
            "{\"pod\":\"web-\\\"1\\\"\",\"namespace\":null,\"podIP\":\"10.0.0.2\",\"node\":null,\
             \"client\":\"127.0.0.1:5000\",\"path\":\"/a\\\\b\\u0001\"}\n"
        );
    }
}
