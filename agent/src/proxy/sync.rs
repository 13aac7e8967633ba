//! The service proxy proper: keeps each Service's applied frontends and, when a Service or its
//! EndpointSlices change, applies only the difference.

use std::collections::HashMap;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{
    dataplane::{Dataplane, DataplaneError},
    desired::{ProxyContext, ServiceFrontends, Skipped, service_frontends},
    health::HealthChecks,
    model::ServiceRef,
};

/// Counters an operator wants to see (exported as metrics later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Frontends not programmed because a map was full.
    pub capacity_errors: u64,
    /// Service ports with a protocol the datapath does not translate (rejected there).
    pub unsupported_ports: u64,
    pub frontends_upserted: u64,
    pub frontends_removed: u64,
}

/// Services × EndpointSlices → a [`Dataplane`], one Service at a time.
#[derive(Debug)]
pub struct ServiceProxy<D> {
    ctx: ProxyContext,
    dataplane: D,
    /// Health-check node ports to keep in step, when this proxy serves them.
    health: Option<HealthChecks>,
    current: HashMap<ServiceRef, ServiceFrontends>,
    stats: ProxyStats,
    /// A copy of `current` for the status endpoints, kept in step one Service at a time.
    view: Option<crate::status::DesiredView>,
}

impl<D: Dataplane> ServiceProxy<D> {
    pub fn new(ctx: ProxyContext, dataplane: D) -> Self {
        Self {
            ctx,
            dataplane,
            health: None,
            current: HashMap::new(),
            stats: ProxyStats::default(),
            view: None,
        }
    }

    /// Also keep `view` in step with what is applied (for `/v1/state` and the metrics).
    pub fn with_view(mut self, view: crate::status::DesiredView) -> Self {
        self.view = Some(view);
        self
    }

    /// Also serve the Services' health-check node ports.
    pub fn with_health_checks(mut self, health: HealthChecks) -> Self {
        self.health = Some(health);
        self
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats
    }

    /// Brings the Service's frontends in line with `svc` and `slices` (its own slices; others
    /// are ignored). A full map is logged and counted, and the other frontends still go in.
    pub fn sync_service(&mut self, svc: &Service, slices: &[&EndpointSlice]) -> Result<(), DataplaneError> {
        let desired = service_frontends(svc, slices, &self.ctx);
        let sref = ServiceRef {
            namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: svc.metadata.name.clone().unwrap_or_default(),
        };
        self.apply(sref, desired)
    }

    /// Makes the changes since the last commit take effect (see [`Dataplane::commit`]).
    pub fn commit(&mut self) -> Result<(), DataplaneError> {
        self.dataplane.commit()
    }

    /// Removes everything the Service had.
    pub fn delete_service(&mut self, sref: &ServiceRef) -> Result<(), DataplaneError> {
        self.apply(sref.clone(), ServiceFrontends::default())
    }

    fn apply(&mut self, sref: ServiceRef, desired: ServiceFrontends) -> Result<(), DataplaneError> {
        let old = self.current.remove(&sref).unwrap_or_default();
        if let Some(health) = &self.health
            && desired.health != old.health
        {
            health.set(&sref, desired.health);
        }
        let _span = tracing::debug_span!("sync_service", service = %sref).entered();
        for skipped in desired.skipped.iter().filter(|s| !old.skipped.contains(s)) {
            let Skipped::UnsupportedProtocol { service, port, protocol } = skipped;
            tracing::warn!(%service, port, protocol, "protocol not supported by the load balancer; traffic to it is rejected");
            self.stats.unsupported_ports += 1;
        }
        for vip in desired.vips.difference(&old.vips) {
            self.dataplane.add_clusterip(*vip)?;
        }
        let mut applied = ServiceFrontends {
            vips: desired.vips.clone(),
            skipped: desired.skipped,
            health: desired.health,
            ..Default::default()
        };
        for (key, frontend) in &desired.frontends {
            if old.frontends.get(key) == Some(frontend) {
                applied.frontends.insert(*key, frontend.clone());
                continue;
            }
            match self.dataplane.upsert(*key, frontend) {
                Ok(()) => {
                    self.stats.frontends_upserted += 1;
                    applied.frontends.insert(*key, frontend.clone());
                }
                Err(DataplaneError::Full { what, capacity, key: name }) => {
                    tracing::error!(frontend = %name, capacity, "{what} is full: frontend not programmed");
                    self.stats.capacity_errors += 1;
                    // What was programmed before stays programmed (and known, so it can be removed).
                    if let Some(before) = old.frontends.get(key) {
                        applied.frontends.insert(*key, before.clone());
                    }
                }
                Err(err) => return Err(err),
            }
        }
        for key in old
            .frontends
            .keys()
            .filter(|k| !desired.frontends.contains_key(k) && !applied.frontends.contains_key(k))
        {
            self.dataplane.remove(key)?;
            self.stats.frontends_removed += 1;
        }
        for vip in old.vips.difference(&desired.vips) {
            self.dataplane.remove_clusterip(*vip)?;
        }
        let keep = !applied.vips.is_empty() || !applied.frontends.is_empty() || applied.health.is_some();
        if let Some(view) = &self.view {
            let mut view = view.lock().unwrap_or_else(|e| e.into_inner());
            if keep {
                view.insert(sref.clone(), applied.clone());
            } else {
                view.remove(&sref);
            }
        }
        if keep {
            self.current.insert(sref, applied);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

    use super::*;
    use crate::proxy::{LbDataplane, memory::MemoryMaps};

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .expect("service")
    }

    fn slice(ips: &[&str]) -> EndpointSlice {
        let endpoints: Vec<_> = ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn proxy() -> ServiceProxy<LbDataplane<MemoryMaps>> {
        ServiceProxy::new(ProxyContext::default(), LbDataplane::new(MemoryMaps::new(251, 8)))
    }

    fn writes(p: &ServiceProxy<LbDataplane<MemoryMaps>>) -> usize {
        p.dataplane().store().writes
    }

    #[test]
    fn an_unchanged_service_writes_nothing() {
        let mut p = proxy();
        let s = slice(&["10.244.1.1", "10.244.1.2"]);
        p.sync_service(&service(), &[&s]).expect("sync");
        let before = writes(&p);
        p.sync_service(&service(), &[&s]).expect("sync again");
        assert_eq!(writes(&p), before);
    }

    #[test]
    fn one_endpoint_added_costs_one_backend_one_row_one_frontend() {
        let mut p = proxy();
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2"])]).expect("sync");
        let before = writes(&p);
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"])]).expect("sync");
        assert_eq!(writes(&p) - before, 3, "backend + Maglev row + frontend");
    }

    #[test]
    fn a_removed_endpoint_has_its_flows_purged_and_its_backend_dropped() {
        let mut p = proxy();
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2"])]).expect("sync");
        p.sync_service(&service(), &[&slice(&["10.244.1.1"])]).expect("sync");
        let maps = p.dataplane().store();
        assert_eq!(maps.purges.len(), 1, "one purge for the one endpoint that left");
        assert_eq!(maps.backends.len(), 1);
    }

    #[test]
    fn deleting_the_service_leaves_empty_maps() {
        let mut p = proxy();
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2"])]).expect("sync");
        p.delete_service(&ServiceRef { namespace: "default".into(), name: "web".into() }).expect("delete");
        let maps = p.dataplane().store();
        assert!(maps.services.is_empty() && maps.backends.is_empty(), "{}", maps.dump());
        assert!(p.dataplane().is_empty());
    }

    #[test]
    fn a_full_frontend_table_is_counted_and_the_rest_still_programmed() {
        let mut p = ServiceProxy::new(ProxyContext::default(), LbDataplane::new(MemoryMaps::new(251, 1)));
        let two_ports: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}
        }))
        .expect("service");
        p.sync_service(&two_ports, &[]).expect("sync");
        assert_eq!(p.stats().capacity_errors, 1);
        assert_eq!(p.dataplane().len(), 1);
    }

    #[test]
    fn a_full_backend_table_leaks_nothing() {
        let mut p = ServiceProxy::new(
            ProxyContext::default(),
            LbDataplane::new(MemoryMaps::with_backends(251, 8, 2)),
        );
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2", "10.244.1.3"])]).expect("sync");
        assert_eq!(p.stats().capacity_errors, 1);
        assert!(p.dataplane().store().backends.is_empty(), "backends of the refused frontend stayed");
        // The same Service with endpoints that fit now goes in, on the row the refused one had.
        p.sync_service(&service(), &[&slice(&["10.244.1.1", "10.244.1.2"])]).expect("sync");
        let maps = p.dataplane().store();
        assert_eq!(maps.backends.len(), 2);
        assert!(maps.services.values().any(|v| v.id == 0 && v.backend_count == 2), "{}", maps.dump());
    }
}
