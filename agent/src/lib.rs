pub mod datapath;
pub mod inspect;
pub mod kubelet;
pub mod proxy;
pub mod runtime;
pub mod status;
