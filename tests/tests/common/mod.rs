//! Programming frontends and backends straight into the maps, for datapath tests that run without
//! the service proxy in front.
#![allow(dead_code)] // each test binary uses a different part

use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_agent::datapath::{
    Datapath,
    lb::maglev::{self, MaglevBackend},
};
use skiff_common::lb::{Backend, ServiceKey, ServiceValue};

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
        let lb = dp.lb();
        for (id, addr) in &self.backends {
            let backend = Backend {
                addr_be: be(*addr.ip()),
                port_be: addr.port().to_be(),
                proto: self.proto,
                flags: 0,
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
        lb.set_service(ServiceKey::vip_marker(be(*self.frontend.ip())), ServiceValue::default())
            .expect("marker");
    }
}
