//! `skiff-cni install`: puts the plugin where runtimes look for it and writes the node's network
//! configuration — what the agent (or a DaemonSet's init container) runs on each node.
//!
//! Both files are replaced atomically (written beside their final name, then renamed), so a
//! runtime never executes a half-copied binary or reads a half-written conflist.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::spec::{
    LATEST,
    config::{Cidr, DEFAULT_MTU, MTUS},
};

/// Where and what to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub subnet: Cidr,
    pub mtu: u32,
    pub pin_dir: PathBuf,
    /// The IPAM `dataDir` (the plugin's default, /var/lib/cni/networks, when `None`). Nodes that
    /// share one host, as in `cargo xtask lab`, each need their own: GC releases every record of
    /// the directory that is not one of its node's attachments.
    pub ipam_data_dir: Option<PathBuf>,
    /// Pod veths get the eBPF load balancer (false for the agent's iptables mode).
    pub load_balancer: bool,
}

pub const CONFLIST: &str = "10-skiff.conflist";

impl Install {
    /// Parses `install`'s flags (everything after the word `install`).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut install = Install {
            bin_dir: "/opt/cni/bin".into(),
            conf_dir: "/etc/cni/net.d".into(),
            subnet: Cidr { addr: std::net::Ipv4Addr::UNSPECIFIED, len: 0 },
            mtu: DEFAULT_MTU,
            pin_dir: skiff_common::names::DEFAULT_PIN_DIR.into(),
            ipam_data_dir: None,
            load_balancer: true,
        };
        let mut subnet = None;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--bin-dir" => install.bin_dir = value()?.into(),
                "--conf-dir" => install.conf_dir = value()?.into(),
                "--pin-dir" => install.pin_dir = value()?.into(),
                "--ipam-data-dir" => install.ipam_data_dir = Some(value()?.into()),
                "--no-load-balancer" => install.load_balancer = false,
                "--subnet" => {
                    let v = value()?;
                    subnet = Some(Cidr::parse(&v).ok_or_else(|| {
                        format!("--subnet {v:?} is not an IPv4 network like 10.244.1.0/24")
                    })?);
                }
                "--mtu" => {
                    let v = value()?;
                    install.mtu = v
                        .parse()
                        .ok()
                        .filter(|m| MTUS.contains(m))
                        .ok_or_else(|| format!("--mtu {v:?} is not {}..{}", MTUS.start(), MTUS.end()))?;
                }
                other => {
                    return Err(format!(
                        "unknown flag {other:?} (install takes --subnet, --bin-dir, --conf-dir, --mtu, --pin-dir, --ipam-data-dir, --no-load-balancer)"
                    ));
                }
            }
        }
        install.subnet = subnet.ok_or("--subnet (the node's pod CIDR) is required")?;
        Ok(install)
    }

    /// The node's conflist: skiff-cni, then the reference portmap plugin for hostPorts.
    pub fn conflist(&self) -> serde_json::Value {
        let mut ipam = json!({"subnet": self.subnet.to_string()});
        if let Some(dir) = &self.ipam_data_dir {
            ipam["dataDir"] = json!(dir);
        }
        let mut skiff =
            json!({"type": "skiff-cni", "mtu": self.mtu, "bpfPinDir": self.pin_dir, "ipam": ipam});
        if !self.load_balancer {
            skiff["loadBalancer"] = json!(false);
        }
        json!({
            "cniVersion": LATEST,
            "name": "skiff",
            "plugins": [skiff, {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}],
        })
    }

    /// Copies `binary` to `<bin dir>/skiff-cni` and writes `<conf dir>/10-skiff.conflist`.
    pub fn run(&self, binary: &Path) -> Result<(), String> {
        let bin = self.bin_dir.join("skiff-cni");
        replace(&bin, |tmp| std::fs::copy(binary, tmp).map(drop))?;
        self.write_conflist()
    }

    /// Writes `<conf dir>/10-skiff.conflist` (what the agent does from its Node's pod CIDR).
    pub fn write_conflist(&self) -> Result<(), String> {
        let conf = self.conf_dir.join(CONFLIST);
        let text = serde_json::to_string_pretty(&self.conflist()).map_err(|e| e.to_string())?;
        replace(&conf, |tmp| std::fs::write(tmp, format!("{text}\n")))
    }
}

/// Writes `path` through `write` to a temporary file beside it, then renames it into place.
fn replace(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("writing {}: {e}", path.display()));
    }
    Ok(())
}
