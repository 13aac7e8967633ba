//! Shared by the test binaries and the pods benchmark: programming frontends and backends
//! straight into the maps (for datapath tests that run without the service proxy in front),
//! waiting for a condition with a deadline, and the parts of a node that runs pods.
#![allow(dead_code)] // each test binary uses a different part

pub mod fixture;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use serde_json::json;
use skiff_agent::{
    datapath::{
        Datapath,
        lb::maglev::{self, MaglevBackend},
    },
    runtime::{Runtime, busybox},
};
use skiff_common::lb::{BACKEND_F_LOCAL, Backend, ServiceKey, ServiceValue};
use skiff_control::local::LocalServer;
use skiff_tests::{Containerd, NetNs, PinDir};

/// Awaits `check` every `pause` until it returns `Some`; `None` once `limit` has passed.
pub async fn poll<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    pause: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
    }
}

/// [`poll`]s `check` every 50 ms; panics naming `what` once `limit` has passed.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    check: impl FnMut() -> F,
) -> T {
    poll(limit, Duration::from_millis(50), check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// What a node running pods is made of (pods.rs and the pods benchmark): a namespace with `ip` on
/// its loopback and forwarding on, a pin dir, a private containerd holding busybox, skiff-cni's
/// conflist for `subnet` in `dir/net.d` (addresses in `dir/ipam`), and skiff-control in-process
/// (its store in `dir/control`).
pub struct NodeParts {
    pub ns: NetNs,
    pub pins: PinDir,
    pub containerd: Containerd,
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
    pub server: LocalServer,
}

impl NodeParts {
    /// `history`: the events skiff-control keeps for watch resume.
    pub async fn start(label: &str, ip: Ipv4Addr, subnet: &str, history: usize) -> NodeParts {
        let ns = NetNs::new(label).expect("node namespace");
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]).expect("node address");
        ns.sysctl("net/ipv4/ip_forward", "1").expect("forwarding");
        let pins = PinDir::new(label).expect("pins");
        let containerd = Containerd::start(label).expect("containerd");
        let dir = tempfile::tempdir().expect("tmp");
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("conf dir");
        let list = json!({"cniVersion": "1.1.0", "name": "skiff", "plugins": [{
            "type": "skiff-cni", "bpfPinDir": pins.path(),
            "ipam": {"subnet": subnet, "dataDir": dir.path().join("ipam")},
        }]});
        std::fs::write(conf_dir.join("10-skiff.conflist"), list.to_string()).expect("conflist");
        let runtime = Runtime::connect(&containerd.socket(), "skiff").await.expect("containerd client");
        let archive = dir.path().join("busybox.tar");
        busybox::build_archive(std::path::Path::new(busybox::BUSYBOX), &archive).expect("image");
        runtime.import(&archive, None).await.expect("import");
        std::fs::create_dir_all(dir.path().join("control")).expect("control dir");
        let server = LocalServer::start(&dir.path().join("control"), history).await.expect("server");
        NodeParts { ns, pins, containerd, dir, runtime, server }
    }
}

pub fn be(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// One frontend and its backends (id, address).
#[derive(Debug, Clone)]
pub struct Svc {
    pub frontend: SocketAddrV4,
    pub proto: u8,
    /// Maglev row (the frontend's id in the datapath).
    pub row: u32,
    pub flags: u32,
    pub backends: Vec<(u32, SocketAddrV4)>,
}

impl Svc {
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(be(*self.frontend.ip()), self.frontend.port().to_be(), self.proto)
    }

    fn maglev_members(&self) -> Vec<MaglevBackend> {
        self.backends
            .iter()
            .map(|(id, a)| MaglevBackend { key: format!("{a}/{}", self.proto), id: *id })
            .collect()
    }

    /// Writes backends, the Maglev row, the frontend and the ClusterIP marker.
    pub fn program(&self, dp: &mut Datapath) {
        self.program_with(dp, &[], true);
    }

    /// Writes an external frontend (no ClusterIP marker), `local` naming the backends that run on
    /// this node.
    pub fn program_external(&self, dp: &mut Datapath, local: &[SocketAddrV4]) {
        self.program_with(dp, local, false);
    }

    fn program_with(&self, dp: &mut Datapath, local: &[SocketAddrV4], marker: bool) {
        let lb = dp.lb();
        for (id, addr) in &self.backends {
            let backend = Backend {
                addr_be: be(*addr.ip()),
                port_be: addr.port().to_be(),
                proto: self.proto,
                flags: if local.contains(addr) { BACKEND_F_LOCAL } else { 0 },
            };
            lb.set_backend(*id, backend).expect("backend");
        }
        let row = maglev::row(&self.maglev_members(), lb.maglev_m());
        if !row.is_empty() {
            lb.set_maglev_row(self.row, &row).expect("row");
        }
        let value = ServiceValue {
            id: self.row,
            backend_count: self.backends.len() as u32,
            flags: self.flags,
            affinity_timeout_s: 10800,
        };
        lb.set_service(self.key(), value).expect("service");
        if marker {
            lb.set_service(ServiceKey::vip_marker(be(*self.frontend.ip())), ServiceValue::default())
                .expect("marker");
        }
    }
}
