//! The commands, and the dispatcher a process (or a test) runs them through.

mod add;
mod check;
mod del;
mod maintenance;

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::spec::{
    LATEST, SUPPORTED_VERSIONS,
    config::{Attachment, NetConf},
    env::{Command, Env},
    error::{CniError, code},
};

/// The pod's gateway: link-local, answered by the host side of its veth (through a permanent
/// neighbour entry in the pod, so no ARP is needed).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

fn attachment(env: &Env) -> Attachment {
    Attachment { container_id: env.container_id.clone(), ifname: env.ifname.clone() }
}

/// What the process prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: Option<Value>,
    pub success: bool,
}

/// The cniVersion the configuration on stdin asks for when this plugin speaks it, else [`LATEST`]:
/// what errors and VERSION answer in.
fn asked_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_owned())
}

/// Runs the command the environment names, with the configuration on stdin.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = asked_version(stdin);
    match dispatch(env, stdin, &version) {
        Ok(stdout) => Outcome { stdout, success: true },
        Err(err) => Outcome { stdout: Some(err.to_json(&version)), success: false },
    }
}

fn dispatch(
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    version: &str,
) -> Result<Option<Value>, CniError> {
    let env = Env::from_lookup(env)?;
    // Every command but VERSION takes a network configuration; STATUS and GC only from 1.1.0 on.
    let conf = || {
        let conf = NetConf::parse(stdin)?;
        if matches!(env.command, Command::Status | Command::Gc) && conf.cni_version != "1.1.0" {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{:?} needs cniVersion 1.1.0, the configuration says {}",
                    env.command, conf.cni_version
                ),
            ));
        }
        Ok(conf)
    };
    match env.command {
        Command::Add => {
            let conf = conf()?;
            add::add(&env, &conf).map(|r| Some(r.to_json(&conf.cni_version)))
        }
        Command::Del => del::del(&env, &conf()?).map(|()| None),
        Command::Check => check::check(&env, &conf()?).map(|()| None),
        Command::Status => maintenance::status(&conf()?).map(|()| None),
        Command::Gc => maintenance::gc(&conf()?).map(|()| None),
        Command::Version => Ok(Some(maintenance::version(version))),
    }
}
