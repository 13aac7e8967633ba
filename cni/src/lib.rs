//! skiff-cni: a CNI 1.1 plugin with routed pod networking, crash-safe IPAM and the Service
//! datapath attached before the pod's first packet. See the crate README.

pub mod cmd;
pub mod datapath;
pub mod install;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod spec;
