//! skiff-control: the control plane. Today: the storage layer the API server stands on.

pub mod store;
