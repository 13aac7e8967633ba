//! skiff-control: the control plane. Today: the Kubernetes-compatible API server, its store, and
//! the first control loops (garbage collector, namespace lifecycle).

pub mod api;
pub mod auth;
pub mod authz;
pub mod backup;
pub mod controllers;
pub mod local;
pub mod pki;
pub mod scheduler;
pub mod secure;
pub mod store;
pub mod tls;
