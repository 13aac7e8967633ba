//! The `CNI_*` environment a runtime calls the plugin with.

use std::path::{Path, PathBuf};

use super::error::{CniError, Result, code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            other => return Err(CniError::new(code::BAD_ENV, format!("unknown CNI_COMMAND {other:?}"))),
        })
    }
}

/// What the runtime told the plugin through its environment.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; optional for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as `KEY=VALUE` pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where chained/delegated plugins live.
    pub path: Vec<PathBuf>,
}

/// Container ids: alphanumerics plus `_ . -`, starting with an alphanumeric (the spec's rule).
fn valid_container_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Interface names as Linux takes them: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

impl Env {
    /// Reads the environment through `get` (the process environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let command = Command::parse(&var("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?)?;
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = var("CNI_CONTAINERID").unwrap_or_default();
        let ifname = var("CNI_IFNAME").unwrap_or_default();
        let netns = var("CNI_NETNS").map(PathBuf::from);
        if needs_attachment {
            if container_id.is_empty() {
                return Err(missing("CNI_CONTAINERID"));
            }
            if !valid_container_id(&container_id) {
                return Err(CniError::new(
                    code::BAD_ENV,
                    format!("invalid CNI_CONTAINERID {container_id:?}"),
                ));
            }
            if ifname.is_empty() {
                return Err(missing("CNI_IFNAME"));
            }
            if !valid_ifname(&ifname) {
                return Err(CniError::new(code::BAD_ENV, format!("invalid CNI_IFNAME {ifname:?}")));
            }
            if netns.is_none() && command != Command::Del {
                return Err(missing("CNI_NETNS"));
            }
        }
        let args = var("CNI_ARGS")
            .map(|a| {
                a.split(';')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| {
                            CniError::new(code::BAD_ENV, format!("invalid CNI_ARGS entry {p:?}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let path = var("CNI_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        Ok(Self { command, container_id, netns, ifname, args, path })
    }

    /// `CNI_NETNS`, which ADD and CHECK need (and [`Env::from_lookup`] insists on for them).
    pub fn netns(&self) -> Result<&Path> {
        self.netns.as_deref().ok_or_else(|| missing("CNI_NETNS"))
    }
}

fn missing(name: &str) -> CniError {
    CniError::new(code::BAD_ENV, format!("{name} is required"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn commands_need_their_variables() {
        let add = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=web;IgnoreUnknown=1"),
        ])
        .expect("add");
        assert_eq!(add.command, Command::Add);
        assert_eq!(add.args[0], ("K8S_POD_NAME".into(), "web".into()));
        let no_netns = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(no_netns.expect_err("netns").code, code::BAD_ENV);
        assert_eq!(add.netns().expect("netns"), Path::new("/run/netns/x"));
        let del = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(
            del.expect("DEL without a netns is allowed").netns().expect_err("no netns").code,
            code::BAD_ENV
        );
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "FLY")]).expect_err("command").code, code::BAD_ENV);
        let bad_id = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(bad_id.expect_err("id").code, code::BAD_ENV);
        let bad_if = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "a/b")]);
        assert_eq!(bad_if.expect_err("ifname").code, code::BAD_ENV);
    }
}
