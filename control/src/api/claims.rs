//! ClusterIPs and node ports are cluster-wide: with several API servers on one etcd, each
//! picking from what its own mirror shows could hand one address to two Services. So every
//! address a Service holds is also claimed by a key of its own (`/skiff/claims/clusterips/<ip>`,
//! `/skiff/claims/nodeports/<port>`, valued with the Service's store key), created before the
//! Service is written: the store's create-if-absent makes exactly one claim win, as Kubernetes'
//! IPAddress objects do. Claims are released when their Service lets the address go; a claim
//! whose Service does not hold its address (a crash between claim and write) is taken over once
//! it is [`STALE_AFTER`] old.

use std::{net::Ipv4Addr, time::Duration};

use serde_json::{Value, json};

use super::{ApiServer, status::ApiError};
use crate::store::{Store, StoreError};

const PREFIX: &str = "/skiff/claims/";
/// A claim older than this whose Service does not hold the address is left over.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// One address a Service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    ClusterIp(Ipv4Addr),
    NodePort(u16),
}

impl Address {
    fn key(self) -> String {
        match self {
            Self::ClusterIp(ip) => format!("{PREFIX}clusterips/{ip}"),
            Self::NodePort(port) => format!("{PREFIX}nodeports/{port}"),
        }
    }
}

/// The addresses `service` holds: its ClusterIP, node ports and health-check node port.
pub fn held(service: &Value) -> Vec<Address> {
    let mut out = Vec::new();
    if let Some(ip) = service.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse().ok())
    {
        out.push(Address::ClusterIp(ip));
    }
    let port = |v: &Value| v.as_u64().and_then(|n| u16::try_from(n).ok());
    for p in service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = p.get("nodePort").and_then(port) {
            out.push(Address::NodePort(n));
        }
    }
    if let Some(n) = service.pointer("/spec/healthCheckNodePort").and_then(port) {
        out.push(Address::NodePort(n));
    }
    out
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Whether the claim `value` on `address` is left over: old enough, and its Service (if any)
/// does not hold the address.
fn stale<S: Store>(server: &ApiServer<S>, address: Address, value: &[u8]) -> bool {
    let Ok(claim) = serde_json::from_slice::<Value>(value) else { return true };
    let old_enough = claim["at"].as_i64().is_none_or(|at| now() - at >= STALE_AFTER.as_secs() as i64);
    let owner = claim["owner"].as_str().unwrap_or_default();
    let holds = server
        .store
        .get(owner)
        .and_then(|o| serde_json::from_slice::<Value>(&o.value).ok())
        .is_some_and(|service| held(&service).contains(&address));
    old_enough && !holds
}

/// Claims each of `addresses` for the Service stored at `owner`. `Ok` with the claims this call
/// made (claims `owner` already had are kept and not listed); `Err(Some(address))` when
/// someone else holds `address`, with this call's claims released again.
pub async fn claim<S: Store>(
    server: &ApiServer<S>,
    owner: &str,
    addresses: &[Address],
) -> Result<Vec<Address>, Result<Address, ApiError>> {
    let mut made = Vec::new();
    let value = serde_json::to_vec(&json!({"owner": owner, "at": now()})).unwrap_or_default();
    for &address in addresses {
        let key = address.key();
        let outcome = match server.store.create(&key, value.clone()).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => match server.store.get(&key) {
                Some(current) if owned_by(&current.value, owner) => Ok(false),
                Some(current) if stale(server, address, &current.value) => server
                    .store
                    .update(&key, value.clone(), Some(current.mod_revision))
                    .await
                    .map(|_| true)
                    .map_err(|_| Ok(address)),
                // Gone meanwhile (released): the next attempt claims it.
                _ => Err(Ok(address)),
            },
            Err(e) => Err(Err(ApiError::internal(format!("claiming {key}: {e}")))),
        };
        match outcome {
            Ok(true) => made.push(address),
            Ok(false) => {}
            Err(e) => {
                release(server, owner, &made).await;
                return Err(e);
            }
        }
    }
    Ok(made)
}

fn owned_by(value: &[u8], owner: &str) -> bool {
    serde_json::from_slice::<Value>(value).is_ok_and(|c| c["owner"] == owner)
}

/// Releases `owner`'s claims on `addresses` (those someone else took over stay).
pub async fn release<S: Store>(server: &ApiServer<S>, owner: &str, addresses: &[Address]) {
    for address in addresses {
        let key = address.key();
        if let Some(current) = server.store.get(&key)
            && owned_by(&current.value, owner)
        {
            // Lost races (taken over, already gone) need nothing more.
            let _ = server.store.delete(&key, Some(current.mod_revision)).await;
        }
    }
}
