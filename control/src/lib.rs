//! skiff-control: the control plane. Today: the Kubernetes-compatible API server, its store, and
//! the first control loops (garbage collector, namespace lifecycle).

pub mod api;
pub mod controllers;
pub mod local;
pub mod scheduler;
pub mod store;
