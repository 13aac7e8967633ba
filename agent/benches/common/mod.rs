//! Shared by the agent's benchmarks: addresses and the frontends they program.

use std::net::Ipv4Addr;

use skiff_agent::{
    datapath::Datapath,
    proxy::{BackendAddr, Dataplane as _, Frontend, FrontendKey, Protocol, ServiceRef},
};

/// ClusterIP `i` (10.96.0.0/12 holds a million).
pub fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i)
}

/// Endpoint address `i`.
pub fn endpoint(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i)
}

/// Programs `services` frontends `vip(i):80/TCP`, each over two endpoints on :8080.
pub fn program(dp: &mut Datapath, services: u32) {
    for i in 0..services {
        let key = FrontendKey { vip: vip(i), port: 80, proto: Protocol::Tcp };
        let backends = [0, 1].map(|b| BackendAddr::remote(endpoint(i * 2 + b), 8080, Protocol::Tcp));
        let frontend = Frontend {
            service: ServiceRef { namespace: "bench".into(), name: format!("s{i}") },
            port_name: String::new(),
            active: backends.into_iter().collect(),
            draining: Default::default(),
            affinity_timeout_s: None,
            local_only: false,
            external: false,
            source_ranges: Default::default(),
        };
        dp.dataplane().upsert(key, &frontend).expect("upsert");
    }
}
