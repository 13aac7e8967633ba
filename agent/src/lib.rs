pub mod datapath;
pub mod proxy;
pub mod runtime;
