pub mod datapath;
pub mod kubelet;
pub mod proxy;
pub mod runtime;
