//! Pod CIDRs for nodes (kube-controller-manager's node IPAM with the range allocator): a node
//! without `spec.podCIDR` gets the lowest free block of `--cluster-cidr` of size
//! `--node-cidr-mask-size` (default /24), which `skiff-agent run` waits for when not given
//! `--pod-cidr`. A block is free when no node holds it, so a deleted node's block is reused.

use std::{collections::HashSet, net::Ipv4Addr};

use jiff::Timestamp;

use super::{
    Ctx, Loop, Work,
    cache::{Cache, Change},
    events,
    queue::Queue,
    writes,
};
use crate::{api::ApiError, store::Store};

const COMPONENT: &str = "node-ipam-controller";

/// The cluster's pod address range and the size of each node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodCidrs {
    pub cluster: (Ipv4Addr, u8),
    pub node_mask: u8,
}

impl PodCidrs {
    /// The `index`-th block, if the cluster range has that many.
    fn block(&self, index: u32) -> Option<String> {
        let (base, len) = self.cluster;
        let count = 1u64 << (self.node_mask.checked_sub(len)?);
        if u64::from(index) >= count {
            return None;
        }
        let size = 1u32.checked_shl(32 - u32::from(self.node_mask)).unwrap_or(0);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let start = (u32::from(base) & mask).checked_add(index.checked_mul(size)?)?;
        Some(format!("{}/{}", Ipv4Addr::from(start), self.node_mask))
    }
}

#[derive(Debug, Default)]
pub struct NodeIpam;

fn pod_cidr(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref().filter(|c| !c.is_empty())
}

impl NodeIpam {
    pub fn observe(&mut self, change: &Change, cache: &Cache, queue: &mut Queue<Work>) {
        let Change::Node(delta) = change else { return };
        match &delta.new {
            Some(node) if pod_cidr(node).is_none() => {
                queue.push((Loop::NodeIpam, node.metadata.name.clone().unwrap_or_default()));
            }
            // A block came free: nodes still waiting may have it.
            None if delta.old.as_deref().and_then(pod_cidr).is_some() => {
                for waiting in cache.nodes.iter().filter(|n| pod_cidr(n).is_none()) {
                    queue.push((Loop::NodeIpam, waiting.metadata.name.clone().unwrap_or_default()));
                }
            }
            _ => {}
        }
    }

    pub async fn reconcile<S: Store + Clone>(
        &mut self,
        ctx: &Ctx<S>,
        cache: &Cache,
        name: &str,
    ) -> Result<Option<Timestamp>, ApiError> {
        let Some(ranges) = ctx.config.pod_cidrs else { return Ok(None) };
        let Some(node) = cache.nodes.get(name).filter(|n| pod_cidr(n).is_none()) else { return Ok(None) };
        let used: HashSet<&str> = cache.nodes.iter().filter_map(|n| pod_cidr(n)).collect();
        let Some(free) = (0..).map_while(|i| ranges.block(i)).find(|b| !used.contains(b.as_str())) else {
            let message = format!("no pod CIDR left in {}/{}", ranges.cluster.0, ranges.cluster.1);
            events::record(
                ctx,
                &events::reference(&**node),
                events::WARNING,
                "CIDRNotAvailable",
                &message,
                COMPONENT,
            )
            .await;
            return Ok(None);
        };
        let mut updated = (**node).clone();
        let spec = updated.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(free.clone());
        spec.pod_cidrs = Some(vec![free.clone()]);
        writes::replace(ctx, &updated, false, COMPONENT).await?;
        let message = format!("Node {name} was assigned pod CIDR {free}");
        events::record(
            ctx,
            &events::reference(&**node),
            events::NORMAL,
            "CIDRAssignmentSucceeded",
            &message,
            COMPONENT,
        )
        .await;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_tile_the_cluster_range_in_order_and_stop_at_its_end() {
        let ranges = PodCidrs { cluster: (Ipv4Addr::new(10, 244, 3, 7), 16), node_mask: 24 };
        assert_eq!(ranges.block(0).as_deref(), Some("10.244.0.0/24"));
        assert_eq!(ranges.block(1).as_deref(), Some("10.244.1.0/24"));
        assert_eq!(ranges.block(255).as_deref(), Some("10.244.255.0/24"));
        assert_eq!(ranges.block(256), None);
        let small = PodCidrs { cluster: (Ipv4Addr::new(192, 168, 0, 0), 24), node_mask: 26 };
        let all: Vec<String> = (0..).map_while(|i| small.block(i)).collect();
        assert_eq!(all, ["192.168.0.0/26", "192.168.0.64/26", "192.168.0.128/26", "192.168.0.192/26"]);
        let upside_down = PodCidrs { cluster: (Ipv4Addr::new(10, 0, 0, 0), 24), node_mask: 16 };
        assert_eq!(upside_down.block(0), None, "a node block larger than the cluster range");
    }
}
