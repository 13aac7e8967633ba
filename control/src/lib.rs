//! skiff-control: the control plane. Today: the Kubernetes-compatible API server and its store.

pub mod api;
pub mod store;
