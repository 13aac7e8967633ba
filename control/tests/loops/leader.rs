//! Leader election: one holder at a time; the other takes over when the holder stops renewing.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use skiff_control::{
    api::ApiServer,
    controllers::{Config, Ctx, clock::SystemClock, leader},
    store::embedded::{EmbeddedStore, Options},
};

fn holder(server: &ApiServer<EmbeddedStore>) -> (Option<String>, i64) {
    let stored = skiff_control::store::Store::get(
        &server.store,
        "/registry/coordination.k8s.io/leases/kube-system/skiff-control",
    );
    let Some(stored) = stored else { return (None, 0) };
    let lease: Value = serde_json::from_slice(&stored.value).expect("lease");
    (
        lease["spec"]["holderIdentity"].as_str().map(str::to_owned),
        lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    )
}

fn election(identity: &str) -> leader::Election {
    leader::Election {
        identity: identity.into(),
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
    }
}

async fn wait_for(server: &ApiServer<EmbeddedStore>, who: &str, within: Duration) -> tokio::time::Instant {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if holder(server).0.as_deref() == Some(who) {
            return tokio::time::Instant::now();
        }
        assert!(tokio::time::Instant::now() < deadline, "{who} did not take the lease: {:?}", holder(server));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn only_one_process_leads_and_a_dead_leader_is_replaced_within_the_lease_time() {
    super::world::runtime().block_on(async {
        let store = EmbeddedStore::in_memory(Options::default()).expect("store");
        let server = Arc::new(ApiServer::new(store, (std::net::Ipv4Addr::new(10, 96, 0, 0), 12)));
        server.bootstrap(None).await.expect("bootstrap");
        let ctx =
            Ctx { server: server.clone(), clock: Arc::new(SystemClock), config: Arc::new(Config::default()) };
        let a = tokio::spawn(leader::run(ctx.clone(), election("a")));
        wait_for(&server, "a", Duration::from_secs(5)).await;
        let b = tokio::spawn(leader::run(ctx.clone(), election("b")));
        // b campaigns every 100 ms; while a renews, the lease never changes hands.
        let watch_until = tokio::time::Instant::now() + Duration::from_millis(1000);
        while tokio::time::Instant::now() < watch_until {
            assert_eq!(holder(&server), (Some("a".into()), 0));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        a.abort();
        let killed = tokio::time::Instant::now();
        let took_over = wait_for(&server, "b", Duration::from_secs(5)).await;
        let handover = took_over - killed;
        // Within the lease time (1.5 s) after the last renewal, plus slack for a loaded machine.
        assert!(handover <= Duration::from_millis(1500 + 2000), "handover took {handover:?}");
        assert_eq!(holder(&server).1, 1, "one transition");
        b.abort();
    });
}
