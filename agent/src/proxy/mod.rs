//! The service proxy: Services × EndpointSlices → desired frontends (pure, per Service) → a
//! minimal set of changes applied by a [`Dataplane`].

pub mod dataplane;
pub mod desired;
pub mod health;
pub mod iptables;
pub mod memory;
pub mod mode;
pub mod model;
pub mod sync;
pub mod watch;

pub use dataplane::{Dataplane, DataplaneError, LbDataplane, MapStore};
pub use desired::{ProxyContext, ServiceFrontends, service_frontends};
pub use model::{BackendAddr, Frontend, FrontendKey, Protocol, ServiceRef};
pub use sync::{ProxyStats, ServiceProxy};
