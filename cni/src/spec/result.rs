//! The success result of ADD (and the `prevResult` CHECK and DEL receive), in the form of the
//! configuration's cniVersion: 0.4.0 results tag each IP with `"version": "4"`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::Dns;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.244.1.5/32`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// The result as `cni_version` writes it.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["cniVersion"] = json!(cni_version);
        if cni_version == "0.4.0"
            && let Some(ips) = v["ips"].as_array_mut()
        {
            for ip in ips {
                ip["version"] = json!("4");
            }
        }
        v
    }

    /// A `prevResult` as any supported version wrote it.
    pub fn from_json(value: &Value) -> Option<Self> {
        serde_json::from_value(value.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_render_per_version() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/p".into(),
            }],
            ips: vec![IpConfig {
                address: "10.244.1.5/32".into(),
                gateway: Some("169.254.1.1".into()),
                interface: Some(0),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some("169.254.1.1".into()) }],
            dns: Dns::default(),
        };
        let v1 = r.to_json("1.1.0");
        assert_eq!(v1["cniVersion"], "1.1.0");
        assert!(v1["ips"][0].get("version").is_none());
        let v04 = r.to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(CniResult::from_json(&v04), Some(r));
    }
}
