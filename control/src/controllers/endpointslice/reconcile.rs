//! Fitting the desired endpoints into the existing slices with as few writes as possible: every
//! write wakes every consumer of the Service on every node, so an endpoint that did not change
//! must not move, and a slice that did not change must not be rewritten.

use std::{
    collections::{BTreeMap, VecDeque},
    net::Ipv4Addr,
};

use k8s_openapi::api::{
    core::v1::Service,
    discovery::v1::{Endpoint, EndpointPort, EndpointSlice},
};

use super::{
    MAX_ENDPOINTS, Plan,
    endpoints::Group,
    ports::{self, PortKey},
    shape::{self, ADDRESS_TYPE},
};

/// An existing slice that stays, with the endpoints it will hold.
#[derive(Debug)]
struct Held<'a> {
    existing: &'a EndpointSlice,
    key: PortKey,
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<Ipv4Addr, Endpoint>,
}

/// Endpoints still looking for a slice, lowest address first.
type Rest = VecDeque<(Ipv4Addr, Endpoint)>;

/// The plan for `service` whose endpoints are `groups`, given the slices we manage for it.
pub(super) fn reconcile(
    service: &Service,
    mut groups: BTreeMap<PortKey, Group>,
    mut ours: Vec<&EndpointSlice>,
) -> Plan {
    // Name order makes every choice below (which duplicate stays, which slice is reused)
    // independent of the order the caller listed slices in.
    ours.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let labels = shape::labels(service);
    let mut plan = Plan::default();
    let mut held = Vec::new();
    // Slices left with no endpoints: reused before anything is created, deleted otherwise.
    let mut free = VecDeque::new();
    for slice in ours {
        // The address type is immutable, and a slice owned by another object belongs to the
        // garbage collector: neither can be reused.
        if !shape::owned_by(slice, service) || slice.address_type != ADDRESS_TYPE {
            plan.delete.extend(slice.metadata.name.clone());
        } else if let Some(h) = claim(slice, &mut groups) {
            held.push(h);
        } else {
            free.push_back(slice);
        }
    }
    for (key, group) in groups {
        let mut rest: Rest = group.endpoints.into_iter().collect();
        place(&key, &group.ports, &mut rest, &labels, &mut held, &mut free);
        while !rest.is_empty() {
            let mut endpoints = BTreeMap::new();
            fill(&mut endpoints, &mut rest);
            let mut slice = shape::new_slice(service);
            slice.ports = Some(group.ports.clone());
            slice.endpoints = Some(endpoints.into_values().collect());
            plan.create.push(slice);
        }
    }
    if held.is_empty() && plan.create.is_empty() {
        // No endpoints at all: keep (or make) one empty slice with no ports, as upstream does.
        let empty = |s: &&EndpointSlice| {
            s.ports.as_deref().unwrap_or_default().is_empty()
                && s.endpoints.as_deref().unwrap_or_default().is_empty()
        };
        let pick = free.iter().position(empty).unwrap_or(0);
        match free.remove(pick) {
            Some(existing) => {
                held.push(Held { existing, key: Vec::new(), ports: Vec::new(), endpoints: BTreeMap::new() })
            }
            None => plan.create.push(shape::new_slice(service)),
        }
    }
    if service.metadata.deletion_timestamp.is_some() {
        // Creating slices the garbage collector is about to chase would race it (upstream).
        plan.create.clear();
    }
    plan.delete.extend(free.iter().filter_map(|s| s.metadata.name.clone()));
    plan.delete.sort();
    plan.update = held.into_iter().filter_map(|h| h.into_update(&labels)).collect();
    plan.update.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    plan
}

/// Keeps the endpoints of `slice` that are still wanted with its port list, taking them out of
/// `groups` so no other slice lists them too (which also drops duplicates across slices).
/// Returns `None` when none are, so the slice is free for reuse.
fn claim<'a>(slice: &'a EndpointSlice, groups: &mut BTreeMap<PortKey, Group>) -> Option<Held<'a>> {
    let ports = slice.ports.clone().unwrap_or_default();
    let key = ports::key(&ports);
    let group = groups.get_mut(&key)?;
    let mut endpoints = BTreeMap::new();
    for endpoint in slice.endpoints.iter().flatten() {
        if endpoints.len() == MAX_ENDPOINTS {
            break;
        }
        let [address] = endpoint.addresses.as_slice() else { continue };
        let Ok(ip) = address.parse::<Ipv4Addr>() else { continue };
        // The desired version replaces the old one: conditions, node or zone may have changed.
        if let Some(desired) = group.endpoints.remove(&ip) {
            endpoints.insert(ip, desired);
        }
    }
    (!endpoints.is_empty()).then_some(Held { existing: slice, key, ports, endpoints })
}

/// Puts new endpoints of one port list into existing slices, cheapest first: slices of that
/// list that are being rewritten anyway (fullest first, to pack them), then free slices (a
/// rewrite instead of a delete plus a create), then unchanged slices with room. What is left in
/// `rest` needs new slices.
fn place<'a>(
    key: &PortKey,
    ports: &[EndpointPort],
    rest: &mut Rest,
    labels: &BTreeMap<String, String>,
    held: &mut Vec<Held<'a>>,
    free: &mut VecDeque<&'a EndpointSlice>,
) {
    if rest.is_empty() {
        return;
    }
    let (mut dirty, mut clean): (Vec<usize>, Vec<usize>) =
        (0..held.len()).filter(|&i| &held[i].key == key).partition(|&i| !held[i].unchanged(labels));
    dirty.sort_by_key(|&i| (std::cmp::Reverse(held[i].endpoints.len()), i));
    for i in dirty {
        fill(&mut held[i].endpoints, rest);
    }
    while !rest.is_empty() {
        let Some(existing) = free.pop_front() else { break };
        let mut h = Held { existing, key: key.clone(), ports: ports.to_vec(), endpoints: BTreeMap::new() };
        fill(&mut h.endpoints, rest);
        held.push(h);
    }
    // Each unchanged slice touched costs a write: one that takes everything left if there is
    // one (the fullest such, as upstream), otherwise the one with the most room.
    clean.retain(|&i| held[i].endpoints.len() < MAX_ENDPOINTS);
    while !rest.is_empty() && !clean.is_empty() {
        let room = |i: usize| MAX_ENDPOINTS - held[i].endpoints.len();
        let fits = clean.iter().copied().filter(|&i| room(i) >= rest.len()).min_by_key(|&i| (room(i), i));
        let pick = fits.or_else(|| clean.iter().copied().max_by_key(|&i| (room(i), std::cmp::Reverse(i))));
        let Some(i) = pick else { break };
        clean.retain(|&j| j != i);
        fill(&mut held[i].endpoints, rest);
    }
}

/// Moves endpoints from `rest` into `slice` until it is full.
fn fill(slice: &mut BTreeMap<Ipv4Addr, Endpoint>, rest: &mut Rest) {
    while slice.len() < MAX_ENDPOINTS {
        let Some((ip, endpoint)) = rest.pop_front() else { return };
        slice.insert(ip, endpoint);
    }
}

impl Held<'_> {
    /// Whether the slice as held is what is stored already. Endpoints are compared in address
    /// order, the order they are written in, so a slice is rewritten once if someone else
    /// reordered it and never again after.
    fn unchanged(&self, labels: &BTreeMap<String, String>) -> bool {
        let existing = self.existing;
        existing.metadata.labels.as_ref() == Some(labels)
            && existing.ports.as_deref().unwrap_or_default() == self.ports.as_slice()
            && existing.endpoints.as_deref().unwrap_or_default().iter().eq(self.endpoints.values())
    }

    /// The replacement for the stored slice, if it differs: a copy keeping its name,
    /// resourceVersion and everything else we do not own, with labels, ports and endpoints set.
    fn into_update(self, labels: &BTreeMap<String, String>) -> Option<EndpointSlice> {
        if self.unchanged(labels) {
            return None;
        }
        let mut slice = self.existing.clone();
        slice.metadata.labels = Some(labels.clone());
        slice.ports = Some(self.ports);
        slice.endpoints = Some(self.endpoints.into_values().collect());
        Some(slice)
    }
}
