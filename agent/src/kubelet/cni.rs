//! The agent as a CNI runtime (spec 1.1): the network configuration list from the conf dir
//! (the lowest-sorting `.conflist`), each plugin executed from the bin dirs with the spec's
//! environment and its configuration on stdin — in order for ADD, each getting the previous
//! result, in reverse for DEL — and the result cached per attachment, since CHECK and DEL need it.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI configuration: {0}")]
    Config(String),
    #[error("CNI plugin {plugin} {command}: {msg} (code {code})")]
    Plugin { plugin: String, command: String, code: u64, msg: String },
    #[error("CNI {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;

/// One pod attachment as the runtime describes it to plugins.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` (K8S_POD_NAMESPACE, K8S_POD_NAME, …).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`), given to plugins that declare the capability.
    pub capabilities: Value,
}

/// The network to attach pods to.
#[derive(Debug, Clone)]
pub struct Cni {
    list: Value,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    /// The namespace plugins run in (the node's); `None`: this process's.
    node_netns: Option<PathBuf>,
    /// The version each plugin type gets on ADD and DEL (see [`Cni::version_for`]).
    versions: Arc<Mutex<HashMap<String, Value>>>,
}

/// Spec versions whose results have the same shape, newest first: a plugin that does not speak
/// the list's version gets the newest of these it does (Debian's reference portmap stops at
/// 1.0.0 while the list is 1.1.0).
const COMPATIBLE_VERSIONS: &[&str] = &["1.1.0", "1.0.0"];

impl Cni {
    /// Loads the lowest-sorting `.conflist` of `conf_dir`.
    pub fn load(conf_dir: &Path, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Result<Self> {
        let io = |what: String| move |source| CniError::Io { what, source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
            .map_err(io(format!("reading {}", conf_dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        files.sort();
        let file = files
            .first()
            .ok_or_else(|| CniError::Config(format!("no .conflist in {}", conf_dir.display())))?;
        let text = std::fs::read(file).map_err(io(format!("reading {}", file.display())))?;
        let list: Value = serde_json::from_slice(&text)
            .map_err(|e| CniError::Config(format!("{} is not JSON: {e}", file.display())))?;
        if list["plugins"].as_array().is_none_or(|p| p.is_empty()) || list["name"].as_str().is_none() {
            return Err(CniError::Config(format!("{} needs a name and plugins", file.display())));
        }
        Ok(Self { list, bin_dirs, cache_dir, node_netns: None, versions: Arc::default() })
    }

    /// Runs the plugins inside the network namespace at `netns` (an agent driving a node that
    /// is a namespace of its own, as in the lab and the tests).
    pub fn in_netns(mut self, netns: PathBuf) -> Self {
        self.node_netns = Some(netns);
        self
    }

    /// The cached result of an attachment (its last ADD).
    pub fn cached(&self, att: &Attachment) -> Option<Value> {
        std::fs::read(self.cache_file(att)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn network(&self) -> &str {
        self.list["name"].as_str().unwrap_or("")
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().cloned().unwrap_or_default()
    }

    /// A plugin's stdin: its own entry plus the list's name and version, the previous result,
    /// and the capability arguments it asked for.
    fn plugin_config(&self, plugin: &Value, previous: Option<&Value>, att: Option<&Attachment>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = self.list["name"].clone();
        conf["cniVersion"] = self.list["cniVersion"].clone();
        if let Some(previous) = previous {
            conf["prevResult"] = previous.clone();
        }
        if let (Some(caps), Some(att)) = (plugin["capabilities"].as_object(), att) {
            let mut runtime = serde_json::Map::new();
            for (cap, enabled) in caps {
                if enabled.as_bool() == Some(true)
                    && let Some(value) = att.capabilities.get(cap)
                {
                    runtime.insert(cap.clone(), value.clone());
                }
            }
            if !runtime.is_empty() {
                conf["runtimeConfig"] = Value::Object(runtime);
            }
        }
        conf
    }

    /// The list's version, or — for a plugin that does not support it (asked once through
    /// VERSION) — the newest compatible version it supports.
    async fn version_for(&self, plugin: &Value) -> Value {
        let listed = self.list["cniVersion"].clone();
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        if let Some(known) = self.versions.lock().ok().and_then(|v| v.get(&kind).cloned()) {
            return known;
        }
        let asked = json!({"cniVersion": listed});
        let answer = match self.exec(plugin, "VERSION", None, &asked).await {
            Ok(Some(answer)) => answer,
            // Not remembered: the next call asks again. Meanwhile the real command fails (or not)
            // with the plugin's own message.
            other => {
                tracing::warn!(plugin = %kind, outcome = ?other.map(drop), "CNI VERSION gave no answer; using the list's version this time");
                return listed;
            }
        };
        let supported: Vec<&str> =
            answer["supportedVersions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let chosen = if supported.contains(&listed.as_str().unwrap_or_default()) {
            listed
        } else {
            COMPATIBLE_VERSIONS.iter().find(|v| supported.contains(v)).map_or(listed, |v| json!(v))
        };
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(kind, chosen.clone());
        }
        chosen
    }

    /// Puts the plugin's version into its configuration and its previous result (the result's
    /// shape is the same across [`COMPATIBLE_VERSIONS`]; plugins check the label).
    async fn negotiate(&self, plugin: &Value, conf: &mut Value) {
        let version = self.version_for(plugin).await;
        if conf["prevResult"].is_object() {
            conf["prevResult"]["cniVersion"] = version.clone();
        }
        conf["cniVersion"] = version;
    }

    /// The name of the cached result of attachment (`container_id`, `ifname`).
    fn cache_name(&self, container_id: &str, ifname: &str) -> String {
        format!("{}-{container_id}-{ifname}.json", self.network())
    }

    fn cache_file(&self, att: &Attachment) -> PathBuf {
        self.cache_dir.join(self.cache_name(&att.container_id, &att.ifname))
    }

    /// ADD through the chain; on failure every plugin gets DEL (the spec's rule) before the
    /// error is returned. Returns the final result.
    pub async fn add(&self, att: &Attachment) -> Result<Value> {
        let mut previous: Option<Value> = None;
        for plugin in self.plugins() {
            let mut conf = self.plugin_config(&plugin, previous.as_ref(), Some(att));
            self.negotiate(&plugin, &mut conf).await;
            match self.exec(&plugin, "ADD", Some(att), &conf).await {
                Ok(result) => previous = result.or(previous),
                Err(err) => {
                    let _ = self.del(att).await;
                    return Err(err);
                }
            }
        }
        let result = previous.unwrap_or_else(|| json!({}));
        std::fs::create_dir_all(&self.cache_dir).map_err(|source| CniError::Io {
            what: format!("creating {}", self.cache_dir.display()),
            source,
        })?;
        let cache = self.cache_file(att);
        std::fs::write(&cache, result.to_string())
            .map_err(|source| CniError::Io { what: format!("writing {}", cache.display()), source })?;
        Ok(result)
    }

    /// DEL through the chain in reverse, with the cached result; idempotent.
    pub async fn del(&self, att: &Attachment) -> Result<()> {
        let previous = self.cached(att);
        let mut first_error = None;
        for plugin in self.plugins().iter().rev() {
            let mut conf = self.plugin_config(plugin, previous.as_ref(), Some(att));
            self.negotiate(plugin, &mut conf).await;
            if let Err(e) = self.exec(plugin, "DEL", Some(att), &conf).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let cache = self.cache_file(att);
        match std::fs::remove_file(&cache) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::Io { what: format!("removing {}", cache.display()), source: e })
            }
            _ => Ok(()),
        }
    }

    /// GC: each plugin releases what belongs to attachments not in `valid`.
    pub async fn gc(&self, valid: &[(String, String)]) -> Result<()> {
        let attachments: Vec<Value> =
            valid.iter().map(|(c, i)| json!({"containerID": c, "ifname": i})).collect();
        for plugin in self.plugins() {
            // Plugins older than 1.1 do not know GC; their own cleanup is DEL's.
            if self.version_for(&plugin).await != self.list["cniVersion"] {
                continue;
            }
            let mut conf = self.plugin_config(&plugin, None, None);
            conf["cni.dev/valid-attachments"] = json!(attachments);
            match self.exec(&plugin, "GC", None, &conf).await {
                Err(CniError::Plugin { code: 1 | 2 | 4, .. }) => {}
                other => {
                    other?;
                }
            }
        }
        // Results of attachments that are gone.
        if let Ok(entries) = std::fs::read_dir(&self.cache_dir) {
            let keep: HashSet<String> = valid.iter().map(|(c, i)| self.cache_name(c, i)).collect();
            let ours = format!("{}-", self.network());
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && name.starts_with(&ours) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    async fn exec(
        &self,
        plugin: &Value,
        command: &str,
        att: Option<&Attachment>,
        conf: &Value,
    ) -> Result<Option<Value>> {
        let kind = plugin["type"].as_str().ok_or_else(|| CniError::Config("a plugin has no type".into()))?;
        let binary = self
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| CniError::Config(format!("plugin {kind} not found in {:?}", self.bin_dirs)))?;
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &path)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(att) = att {
            let args: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname)
                .env("CNI_ARGS", args.join(";"));
        }
        let io = |what: &str| {
            let what = format!("{what} {}", binary.display());
            move |source| CniError::Io { what, source }
        };
        if let Some(netns) = &self.node_netns {
            let file = std::fs::File::open(netns).map_err(io("opening the node namespace for"))?;
            // SAFETY: setns is one system call, safe between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let mut child = cmd.spawn().map_err(io("running"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf.to_string().as_bytes()).await.map_err(io("writing to"))?;
        }
        let out = child.wait_with_output().await.map_err(io("waiting for"))?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let error =
                parsed.unwrap_or_else(|| json!({"code": 999, "msg": String::from_utf8_lossy(&out.stderr)}));
            return Err(CniError::Plugin {
                plugin: kind.into(),
                command: command.into(),
                code: error["code"].as_u64().unwrap_or(999),
                msg: error["msg"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(parsed.filter(|v| v.is_object()))
    }
}

/// The pod's IPv4 address in a result.
pub fn pod_ip(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A plugin that records each command's stdin in `<dir>/<name>-<COMMAND>.json`, answers
    /// VERSION with `versions` and ADD with its previous result (or a fresh one).
    fn fake_plugin(dir: &Path, name: &str, versions: &str) {
        let script = format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s' \"$in\" > {dir}/{name}-$CNI_COMMAND.json\n\
             case $CNI_COMMAND in\n\
             VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[{versions}]}}' ;;\n\
             ADD) echo '{{\"cniVersion\":\"1.1.0\",\"ips\":[{{\"address\":\"10.9.0.2/24\"}}]}}' ;;\n\
             esac\n",
            dir = dir.display()
        );
        let path = dir.join(name);
        std::fs::write(&path, script).expect("plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn recorded(dir: &Path, name: &str, command: &str) -> Value {
        let text =
            std::fs::read_to_string(dir.join(format!("{name}-{command}.json"))).expect("recorded stdin");
        serde_json::from_str(&text).expect("JSON stdin")
    }

    #[test]
    fn a_plugin_that_stops_at_1_0_0_gets_1_0_0_and_so_does_its_previous_result() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        fake_plugin(d, "current", r#""0.4.0","1.0.0","1.1.0""#);
        fake_plugin(d, "old", r#""0.4.0","1.0.0""#);
        let list =
            json!({"cniVersion": "1.1.0", "name": "net", "plugins": [{"type": "current"}, {"type": "old"}]});
        std::fs::write(d.join("10-net.conflist"), list.to_string()).expect("conflist");
        let cni = Cni::load(d, vec![d.to_owned()], d.join("cache")).expect("load");
        let att = Attachment {
            container_id: "c1".into(),
            netns: "/run/netns/none".into(),
            ifname: "eth0".into(),
            args: Vec::new(),
            capabilities: json!({}),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        rt.block_on(cni.add(&att)).expect("ADD");
        assert_eq!(recorded(d, "current", "ADD")["cniVersion"], "1.1.0");
        let old = recorded(d, "old", "ADD");
        assert_eq!(old["cniVersion"], "1.0.0");
        assert_eq!(old["prevResult"]["cniVersion"], "1.0.0");
        assert_eq!(old["prevResult"]["ips"][0]["address"], "10.9.0.2/24");
        rt.block_on(cni.del(&att)).expect("DEL");
        assert_eq!(recorded(d, "old", "DEL")["cniVersion"], "1.0.0");
        assert_eq!(recorded(d, "current", "DEL")["cniVersion"], "1.1.0");
        // GC exists from 1.1.0 on: only the plugin that speaks it is asked.
        rt.block_on(cni.gc(&[])).expect("GC");
        assert!(recorded(d, "current", "GC")["cni.dev/valid-attachments"].is_array());
        assert!(!d.join("old-GC.json").exists(), "a 1.0.0 plugin got GC");
    }
}
