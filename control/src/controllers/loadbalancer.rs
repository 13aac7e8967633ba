//! LoadBalancer addresses for bare metal and labs (the cloud controller's role, like MetalLB's
//! controller): a Service of type LoadBalancer gets one address of the configured pool in
//! `status.loadBalancer.ingress` — the one in `spec.loadBalancerIP` if it asks for a free one of
//! the pool, else the lowest free one — and keeps it while it stays a LoadBalancer; a Service
//! that stops being one loses it. Services with a `loadBalancerClass` belong to another
//! implementation and are left alone. When the pool runs dry the Service waits (with a Warning
//! event) until an address is released.

use std::{collections::HashSet, net::Ipv4Addr};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change, key_of},
    events,
    queue::Queue,
    writes,
};
use crate::{api::ApiError, store::Store};

const COMPONENT: &str = "service-lb-controller";

#[derive(Debug, Default)]
pub struct Assigner;

fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"))
}

fn class(svc: &Service) -> Option<&str> {
    svc.spec.as_ref()?.load_balancer_class.as_deref()
}

/// The IPv4 addresses in the Service's `status.loadBalancer.ingress`.
fn ingress(svc: &Service) -> Vec<Ipv4Addr> {
    let list = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    list.into_iter().flatten().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect()
}

fn in_pool(pool: &[(Ipv4Addr, Ipv4Addr)], ip: Ipv4Addr) -> bool {
    pool.iter().any(|(first, last)| (*first..=*last).contains(&ip))
}

/// The lowest address of `pool` not in `used`.
fn first_free(pool: &[(Ipv4Addr, Ipv4Addr)], used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    pool.iter().find_map(|(first, last)| {
        (u32::from(*first)..=u32::from(*last)).map(Ipv4Addr::from).find(|ip| !used.contains(ip))
    })
}

impl Assigner {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        let Change::Service(delta) = change else { return };
        if let Some(svc) = &delta.new {
            queue.push((Loop::LoadBalancer, key_of(&svc.metadata)));
        } else if delta.old.as_deref().is_some_and(|old| !ingress(old).is_empty()) {
            // An address came free: Services still waiting for one may have it.
            for waiting in cache.services.iter().filter(|s| is_load_balancer(s) && ingress(s).is_empty()) {
                queue.push((Loop::LoadBalancer, key_of(&waiting.metadata)));
            }
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        key: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let pool = &ctx.config.lb_pool;
        let Some(svc) = cache.services.get(key) else { return Ok(None) };
        if pool.is_empty() || class(svc).is_some() {
            return Ok(None);
        }
        let held = ingress(svc);
        let wanted: Vec<Ipv4Addr> = if is_load_balancer(svc) {
            let used: HashSet<Ipv4Addr> = cache
                .services
                .iter()
                .filter(|s| s.metadata.uid != svc.metadata.uid && is_load_balancer(s))
                .flat_map(|s| ingress(s))
                .collect();
            let keep = held.iter().copied().find(|ip| in_pool(pool, *ip) && !used.contains(ip));
            let asked = svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_ip.as_deref()?.parse::<Ipv4Addr>().ok())
                .filter(|ip| in_pool(pool, *ip) && !used.contains(ip));
            match asked.or(keep).or_else(|| first_free(pool, &used)) {
                Some(ip) => vec![ip],
                None => {
                    let message = "no free address in the LoadBalancer pool";
                    events::record(
                        ctx,
                        &events::reference(&**svc),
                        events::WARNING,
                        "AllocationFailed",
                        message,
                        COMPONENT,
                    )
                    .await;
                    return Ok(None);
                }
            }
        } else {
            // No longer a LoadBalancer: addresses from our pool go.
            held.iter().copied().filter(|ip| !in_pool(pool, *ip)).collect()
        };
        if wanted == held {
            return Ok(None);
        }
        let mut updated = (**svc).clone();
        let status = updated.status.get_or_insert_with(ServiceStatus::default);
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: (!wanted.is_empty()).then(|| {
                wanted
                    .iter()
                    .map(|ip| LoadBalancerIngress {
                        ip: Some(ip.to_string()),
                        ip_mode: Some("VIP".into()),
                        ..LoadBalancerIngress::default()
                    })
                    .collect()
            }),
        });
        writes::replace(ctx, &updated, true, COMPONENT).await?;
        if let Some(ip) = wanted.first() {
            let message = format!("Assigned IP [\"{ip}\"]");
            events::record(
                ctx,
                &events::reference(&**svc),
                events::NORMAL,
                "IPAllocated",
                &message,
                COMPONENT,
            )
            .await;
        }
        Ok(None)
    }
}
