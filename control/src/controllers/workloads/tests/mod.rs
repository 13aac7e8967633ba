//! Tests of the workload decisions: unit tests of the helpers and of single ReplicaSet plans,
//! and step-by-step simulations of Deployments (see `world`) that check invariants after every
//! write.

mod fixtures;
mod world;

mod daemonset;
mod daemonset_rolling;
mod deployment_basics;
mod hash;
mod history;
mod pods;
mod progress;
mod recreate;
mod replicaset;
mod rolling;
mod scaling;
