//! Feeding the service proxy from any Kubernetes API server: kube-rs watchers on Services and
//! EndpointSlices, a local cache of both, and per-Service syncs when either changes. Relists
//! (watch expiry, API server restarts) end with a sweep of whatever disappeared meanwhile.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};

use super::{
    dataplane::{Dataplane, DataplaneError},
    desired::SERVICE_NAME_LABEL,
    model::ServiceRef,
    sync::ServiceProxy,
};

/// One event from either watch.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once from the stream into the handler; boxing buys nothing"
)]
pub enum Change {
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
}

fn service_ref(svc: &Service) -> ServiceRef {
    ServiceRef {
        namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: svc.metadata.name.clone().unwrap_or_default(),
    }
}

/// The Service an EndpointSlice belongs to, and the slice's own name.
fn slice_ref(slice: &EndpointSlice) -> Option<(ServiceRef, String)> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let namespace = slice.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    Some((ServiceRef { namespace, name: service }, slice.metadata.name.clone().unwrap_or_default()))
}

/// Cached Services and EndpointSlices in front of a [`ServiceProxy`].
#[derive(Debug)]
pub struct Feeder<D> {
    proxy: ServiceProxy<D>,
    services: HashMap<ServiceRef, Service>,
    slices: HashMap<ServiceRef, BTreeMap<String, EndpointSlice>>,
    /// During a Service relist: the Services seen so far.
    relist_services: Option<HashSet<ServiceRef>>,
    /// During a slice relist: the slices seen so far.
    relist_slices: Option<HashSet<(ServiceRef, String)>>,
    /// Whether each watch has completed a first listing.
    listed: (bool, bool),
    /// Both first listings are in: events are applied as they come. Before that they only fill the
    /// cache, so a restarted agent never programs a Service whose EndpointSlices it has not seen
    /// yet (which would reject new connections to it for a moment).
    ready: bool,
    /// Readiness and reconcile latency for the status endpoints.
    status: Option<std::sync::Arc<crate::status::Status>>,
}

impl<D: Dataplane> Feeder<D> {
    /// Reports readiness, the applied state and reconcile latency to `status`.
    pub fn with_status(mut self, status: std::sync::Arc<crate::status::Status>) -> Self {
        self.proxy = self.proxy.with_view(status.desired_view());
        self.status = Some(status);
        self
    }

    pub fn new(proxy: ServiceProxy<D>) -> Self {
        Self {
            proxy,
            services: HashMap::new(),
            slices: HashMap::new(),
            relist_services: None,
            relist_slices: None,
            listed: (false, false),
            ready: false,
            status: None,
        }
    }

    /// Whether the first complete listing has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Once both watches have listed everything: apply every Service, then remove what a previous
    /// agent left that no Service claimed.
    fn become_ready_if_listed(&mut self) -> Result<(), DataplaneError> {
        if self.ready || !(self.listed.0 && self.listed.1) {
            return Ok(());
        }
        self.ready = true;
        let all: Vec<ServiceRef> = self.services.keys().cloned().collect();
        for sref in &all {
            self.sync(sref)?;
        }
        self.proxy.dataplane_mut().sweep_unclaimed()?;
        if let Some(status) = &self.status {
            status.set_ready();
        }
        tracing::info!(services = all.len(), "first listing applied; stale datapath entries swept");
        Ok(())
    }

    pub fn proxy(&self) -> &ServiceProxy<D> {
        &self.proxy
    }

    /// Commits what the handled events changed, once the first listing is in (before that nothing
    /// was applied, and a commit would replace a previous agent's state with an empty one).
    pub fn commit(&mut self) -> Result<(), DataplaneError> {
        if self.ready { self.proxy.commit() } else { Ok(()) }
    }

    fn sync(&mut self, sref: &ServiceRef) -> Result<(), DataplaneError> {
        if !self.ready {
            return Ok(());
        }
        match self.services.get(sref) {
            Some(svc) => {
                let slices: Vec<&EndpointSlice> =
                    self.slices.get(sref).map(|m| m.values().collect()).unwrap_or_default();
                self.proxy.sync_service(svc, &slices)
            }
            None => Ok(()),
        }
    }

    /// Applies one watch event.
    pub fn handle(&mut self, change: Change) -> Result<(), DataplaneError> {
        match change {
            Change::Service(event) => self.service_event(event),
            Change::Slice(event) => self.slice_event(event),
        }
    }

    fn service_event(&mut self, event: watcher::Event<Service>) -> Result<(), DataplaneError> {
        match event {
            watcher::Event::Init => {
                self.relist_services = Some(HashSet::new());
                Ok(())
            }
            watcher::Event::Apply(svc) | watcher::Event::InitApply(svc) => {
                let sref = service_ref(&svc);
                if let Some(seen) = &mut self.relist_services {
                    seen.insert(sref.clone());
                }
                self.services.insert(sref.clone(), svc);
                self.sync(&sref)
            }
            watcher::Event::Delete(svc) => {
                let sref = service_ref(&svc);
                self.services.remove(&sref);
                if self.ready { self.proxy.delete_service(&sref) } else { Ok(()) }
            }
            watcher::Event::InitDone => {
                let seen = self.relist_services.take().unwrap_or_default();
                let gone: Vec<ServiceRef> =
                    self.services.keys().filter(|s| !seen.contains(s)).cloned().collect();
                for sref in gone {
                    self.services.remove(&sref);
                    if self.ready {
                        self.proxy.delete_service(&sref)?;
                    }
                }
                self.listed.0 = true;
                self.become_ready_if_listed()
            }
        }
    }

    fn slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> Result<(), DataplaneError> {
        match event {
            watcher::Event::Init => {
                self.relist_slices = Some(HashSet::new());
                Ok(())
            }
            watcher::Event::Apply(slice) | watcher::Event::InitApply(slice) => {
                let Some((sref, name)) = slice_ref(&slice) else { return Ok(()) };
                if let Some(seen) = &mut self.relist_slices {
                    seen.insert((sref.clone(), name.clone()));
                }
                self.slices.entry(sref.clone()).or_default().insert(name, slice);
                self.sync(&sref)
            }
            watcher::Event::Delete(slice) => {
                let Some((sref, name)) = slice_ref(&slice) else { return Ok(()) };
                if let Some(m) = self.slices.get_mut(&sref) {
                    m.remove(&name);
                }
                self.sync(&sref)
            }
            watcher::Event::InitDone => {
                let seen = self.relist_slices.take().unwrap_or_default();
                let mut touched = HashSet::new();
                for (sref, slices) in &mut self.slices {
                    let before = slices.len();
                    slices.retain(|name, _| seen.contains(&(sref.clone(), name.clone())));
                    if slices.len() != before {
                        touched.insert(sref.clone());
                    }
                }
                for sref in touched {
                    self.sync(&sref)?;
                }
                self.listed.1 = true;
                self.become_ready_if_listed()
            }
        }
    }
}

/// Watches Services and EndpointSlices through `client` until the streams end (they do not, on
/// their own: errors are logged and the watches retried with back-off).
pub async fn run<D: Dataplane>(client: Client, feeder: &mut Feeder<D>) -> Result<(), DataplaneError> {
    let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|r| r.map(Change::Service));
    let slices =
        watcher(Api::<EndpointSlice>::all(client), watcher::Config::default().labels(SERVICE_NAME_LABEL))
            .default_backoff()
            .map(|r| r.map(Change::Slice));
    let mut changes = std::pin::pin!(futures::stream::select(services, slices));
    while let Some(first) = changes.next().await {
        let started = std::time::Instant::now();
        // Everything already waiting goes into one commit (one iptables-restore in that mode).
        let mut next = Some(first);
        while let Some(change) = next {
            match change {
                Ok(change) => feeder.handle(change)?,
                Err(err) => tracing::warn!(error = %err, "watch failed; retrying with back-off"),
            }
            next = changes.next().now_or_never().flatten();
        }
        feeder.commit()?;
        if feeder.ready
            && let Some(status) = &feeder.status
        {
            status.observe_reconcile(started.elapsed());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{LbDataplane, ProxyContext, memory::MemoryMaps};

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .expect("service")
    }

    fn slice(service: &str, name: &str, ips: &[&str]) -> EndpointSlice {
        let endpoints: Vec<_> = ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    /// A feeder past its first (empty) listing.
    fn feeder() -> Feeder<LbDataplane<MemoryMaps>> {
        let mut f = Feeder::new(ServiceProxy::new(
            ProxyContext::default(),
            LbDataplane::new(MemoryMaps::new(251, 8)),
        ));
        list_nothing(&mut f);
        f
    }

    fn list_nothing(f: &mut Feeder<LbDataplane<MemoryMaps>>) {
        for change in [
            Change::Service(watcher::Event::Init),
            Change::Service(watcher::Event::InitDone),
            Change::Slice(watcher::Event::Init),
            Change::Slice(watcher::Event::InitDone),
        ] {
            f.handle(change).expect("listing");
        }
    }

    fn dump(f: &Feeder<LbDataplane<MemoryMaps>>) -> String {
        f.proxy().dataplane().store().dump()
    }

    #[test]
    fn a_slice_before_its_service_is_used_once_the_service_arrives() {
        let mut f = feeder();
        f.handle(Change::Slice(watcher::Event::Apply(slice("web", "web-1", &["10.244.0.1"]))))
            .expect("slice");
        assert!(!dump(&f).contains("frontend"), "{}", dump(&f));
        f.handle(Change::Service(watcher::Event::Apply(service("web", "10.96.0.10")))).expect("service");
        assert!(dump(&f).contains("frontend 10.96.0.10:80/TCP backends=1"), "{}", dump(&f));
    }

    #[test]
    fn slices_of_one_service_add_up_and_deletes_take_effect() {
        let mut f = feeder();
        f.handle(Change::Service(watcher::Event::Apply(service("web", "10.96.0.10")))).expect("service");
        f.handle(Change::Slice(watcher::Event::Apply(slice("web", "web-1", &["10.244.0.1"]))))
            .expect("slice");
        f.handle(Change::Slice(watcher::Event::Apply(slice("web", "web-2", &["10.244.0.2"]))))
            .expect("slice");
        assert!(dump(&f).contains("backends=2"), "{}", dump(&f));
        f.handle(Change::Slice(watcher::Event::Delete(slice("web", "web-1", &[])))).expect("delete slice");
        assert!(dump(&f).contains("backends=1"), "{}", dump(&f));
        f.handle(Change::Service(watcher::Event::Delete(service("web", "10.96.0.10"))))
            .expect("delete service");
        assert_eq!(dump(&f), "");
    }

    #[test]
    fn a_relist_sweeps_what_disappeared_while_the_watch_was_down() {
        let mut f = feeder();
        for (name, ip) in [("a", "10.96.0.1"), ("b", "10.96.0.2")] {
            f.handle(Change::Service(watcher::Event::Apply(service(name, ip)))).expect("service");
            let s = slice(name, &format!("{name}-1"), &["10.244.0.1", "10.244.0.2"]);
            f.handle(Change::Slice(watcher::Event::Apply(s))).expect("slice");
        }
        // The watch expired; meanwhile Service a went away and b lost an endpoint.
        f.handle(Change::Service(watcher::Event::Init)).expect("init");
        f.handle(Change::Service(watcher::Event::InitApply(service("b", "10.96.0.2")))).expect("relist");
        f.handle(Change::Service(watcher::Event::InitDone)).expect("done");
        f.handle(Change::Slice(watcher::Event::Init)).expect("init");
        f.handle(Change::Slice(watcher::Event::InitApply(slice("b", "b-1", &["10.244.0.2"]))))
            .expect("relist");
        f.handle(Change::Slice(watcher::Event::InitDone)).expect("done");
        let d = dump(&f);
        assert!(!d.contains("10.96.0.1:"), "{d}");
        assert!(d.contains("frontend 10.96.0.2:80/TCP backends=1"), "{d}");
    }

    #[test]
    fn a_restarted_agent_keeps_rows_and_ids_of_what_is_still_there_and_sweeps_the_rest() {
        // The first agent programs two Services.
        let mut first = feeder();
        for (name, ip) in [("a", "10.96.0.1"), ("b", "10.96.0.2")] {
            first.handle(Change::Service(watcher::Event::Apply(service(name, ip)))).expect("service");
            first
                .handle(Change::Slice(watcher::Event::Apply(slice(
                    name,
                    &format!("{name}-1"),
                    &["10.244.0.1"],
                ))))
                .expect("slice");
        }
        let maps = first.proxy().dataplane().store().clone();
        let rows_before: BTreeMap<_, _> = maps.services.iter().map(|(k, v)| (*k, v.id)).collect();
        let backends_before = maps.backends.clone();

        // The next agent adopts the maps; only Service b still exists.
        let mut next = Feeder::new(ServiceProxy::new(ProxyContext::default(), LbDataplane::adopt(maps)));
        next.handle(Change::Service(watcher::Event::Init)).expect("init");
        next.handle(Change::Service(watcher::Event::InitApply(service("b", "10.96.0.2")))).expect("b");
        next.handle(Change::Service(watcher::Event::InitDone)).expect("done");
        assert!(!next.is_ready(), "applied before the slices were listed");
        next.handle(Change::Slice(watcher::Event::Init)).expect("init");
        next.handle(Change::Slice(watcher::Event::InitApply(slice("b", "b-1", &["10.244.0.1"]))))
            .expect("b-1");
        next.handle(Change::Slice(watcher::Event::InitDone)).expect("done");
        assert!(next.is_ready());

        let after = next.proxy().dataplane().store();
        let d = after.dump();
        assert!(!d.contains("10.96.0.1"), "Service a not swept:\n{d}");
        for (key, value) in &after.services {
            assert_eq!(rows_before.get(key), Some(&value.id), "a kept frontend changed row");
        }
        assert_eq!(after.backends, backends_before, "the shared endpoint kept its id");
    }
}
