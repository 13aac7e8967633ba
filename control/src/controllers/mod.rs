//! The control loops that run inside skiff-control, next to the store. They share one store
//! watch feeding one typed [`cache::Cache`]; each loop turns the changes it cares about into
//! keys on one [`queue::Queue`], and reconciles a key by comparing the cache with what should be
//! and writing the difference through the API server's own code paths (admission, validation,
//! field ownership, finalizers, grace periods).
//!
//! Level-triggered and restartable: on start (and after falling behind the watch) everything is
//! listed and every object examined again; a loop never trusts memory over the cache. Before a
//! key is reconciled the cache catches up with every write made so far, its own included, so a
//! loop never acts twice on a stale view (no "expectations" bookkeeping needed). Time comes from
//! a [`clock::Clock`], so tests drive the loops with a hand-moved clock and [`Manager::settle`].
//!
//! One process runs the loops at a time: [`leader`] holds a Lease for it.

pub mod batch;
pub mod cache;
pub mod clock;
mod daemonsets;
mod deployments;
mod disruption;
pub mod endpointslice;
mod events;
mod gc;
pub mod leader;
mod loadbalancer;
mod manager;
mod namespace;
mod nodeipam;
mod nodes;
mod preempting;
pub mod queue;
mod quota;
mod replicasets;
mod scheduling;
pub mod serviceaccounts;
mod slices;
pub mod workloads;
mod writes;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

pub use manager::Manager;
pub use nodeipam::PodCidrs;

use crate::{api::ApiServer, store::Store};

/// Which loop a queued key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Loop {
    /// Garbage collection and namespace lifecycle (both follow the owner graph); keys are store
    /// keys.
    Gc,
    /// The scheduler; its one key means "decide the next batch of pending pods".
    Scheduler,
    /// EndpointSlices; keys are `namespace/name` of Services.
    EndpointSlice,
    /// ReplicaSets; keys are `namespace/name`.
    ReplicaSet,
    /// Deployments; keys are `namespace/name`.
    Deployment,
    /// DaemonSets; keys are `namespace/name`.
    DaemonSet,
    /// Node lifecycle; keys are node names.
    Nodes,
    /// LoadBalancer address assignment; keys are `namespace/name` of Services.
    LoadBalancer,
    /// Pod CIDRs for nodes; keys are node names.
    NodeIpam,
    /// Jobs; keys are `namespace/name`.
    Job,
    /// Pods holding a Job's tracking finalizer that no live Job will count; keys are
    /// `namespace/name` of pods.
    JobPod,
    /// CronJobs; keys are `namespace/name`.
    CronJob,
    /// PodDisruptionBudget status; keys are `namespace/name`.
    Disruption,
    /// Each namespace's `default` ServiceAccount and `kube-root-ca.crt`; keys are namespaces.
    ServiceAccounts,
    /// ResourceQuota usage; keys are namespaces.
    Quota,
}

/// A queued key for a loop.
pub type Work = (Loop, String);

/// Tunables of the loops.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node's Lease may go unrenewed before the node is Ready=Unknown and tainted
    /// unreachable (kube-controller-manager's `--node-monitor-grace-period`).
    pub node_monitor_grace: Duration,
    /// How long pods without a toleration of their node's NoExecute not-ready/unreachable taint
    /// stay before they are evicted (what the DefaultTolerationSeconds admission gives pods
    /// upstream).
    pub default_toleration: Duration,
    /// Addresses LoadBalancer Services get `status.loadBalancer.ingress` from, as inclusive
    /// ranges; empty: the loop leaves LoadBalancer Services alone.
    pub lb_pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Where nodes' pod CIDRs come from (`--cluster-cidr`, `--node-cidr-mask-size`); `None`:
    /// nodes bring their own.
    pub pod_cidrs: Option<nodeipam::PodCidrs>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_monitor_grace: Duration::from_secs(40),
            default_toleration: Duration::from_secs(300),
            lb_pool: Vec::new(),
            pod_cidrs: None,
        }
    }
}

/// What every loop acts through.
#[derive(Debug, Clone)]
pub struct Ctx<S> {
    pub server: Arc<ApiServer<S>>,
    pub clock: Arc<dyn clock::Clock>,
    pub config: Arc<Config>,
}

/// Runs the loops on the current tokio runtime while this process holds the leader Lease.
pub fn spawn<S: Store + Clone>(
    server: Arc<ApiServer<S>>,
    config: Config,
    election: leader::Election,
) -> tokio::task::JoinHandle<()> {
    let ctx = Ctx { server, clock: Arc::new(clock::SystemClock), config: Arc::new(config) };
    tokio::spawn(leader::run(ctx, election))
}
