//! Pod CIDRs for nodes from the cluster range.

use std::net::Ipv4Addr;

use serde_json::json;
use skiff_control::controllers::{Config, PodCidrs};

use crate::world::{World, runtime};

fn cidr(w: &World, node: &str) -> Option<String> {
    w.get("Node", None, node)?["spec"]["podCIDR"].as_str().map(str::to_owned)
}

#[test]
fn nodes_get_the_lowest_free_block_and_a_deleted_nodes_block_is_reused() {
    runtime().block_on(async {
        let ranges = PodCidrs { cluster: (Ipv4Addr::new(10, 244, 0, 0), 16), node_mask: 24 };
        let mut w = World::new(Config { pod_cidrs: Some(ranges), ..Config::default() }).await;
        w.node_with("own", "4", json!({"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]})).await;
        w.node("a").await;
        w.settle().await;
        w.node("b").await;
        w.settle().await;
        assert_eq!(cidr(&w, "own").as_deref(), Some("10.244.0.0/24"), "a node's own CIDR stays");
        assert_eq!(cidr(&w, "a").as_deref(), Some("10.244.1.0/24"), "the taken block is skipped");
        assert_eq!(cidr(&w, "b").as_deref(), Some("10.244.2.0/24"));
        let a = w.get("Node", None, "a").expect("a");
        assert_eq!(a["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
        assert_eq!(w.events("a", "CIDRAssignmentSucceeded").len(), 1);

        skiff_control::store::Store::delete(&w.server.store, "/registry/core/nodes/a", None)
            .await
            .expect("delete a");
        w.node("c").await;
        w.settle().await;
        assert_eq!(cidr(&w, "c").as_deref(), Some("10.244.1.0/24"), "a's block is free again");
    });
}

#[test]
fn without_a_cluster_range_nodes_keep_no_cidr() {
    runtime().block_on(async {
        let mut w = World::new(Config::default()).await;
        w.node("a").await;
        w.settle().await;
        assert_eq!(cidr(&w, "a"), None);
    });
}
