pub mod datapath;
pub mod proxy;
