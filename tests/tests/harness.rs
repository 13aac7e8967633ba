//! The harness itself: isolation, cleanup on drop and on panic, and sweeping after a killed run.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddrV4,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use skiff_tests::{NetNs, PairTopology, PinDir, sweep_stale, traffic};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[test]
fn closures_run_inside_the_namespace() {
    let ns = NetNs::new("inside").expect("netns");
    // A fresh namespace has only loopback; the host has more than that.
    let inside = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").expect("read")).expect("ran");
    let ifaces: Vec<&str> =
        inside.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(ifaces, ["lo"], "the thread saw another namespace's interfaces");
}

#[test]
fn pair_topology_passes_udp_and_is_removed_on_drop() {
    let topo = PairTopology::new("udp").expect("topology");
    let names = [topo.client.name().to_owned(), topo.server.name().to_owned()];
    let echo = traffic::UdpServer::echo(&topo.server, SocketAddrV4::new(topo.server_ip, 7000)).expect("echo");
    let answered = traffic::udp_ping(&topo.client, echo.addr(), 5, 32, Duration::from_secs(2)).expect("ping");
    assert_eq!(answered, 5);
    assert_eq!(echo.stop(), 5);
    drop(topo);
    for name in names {
        assert!(!netns_exists(&name), "{name} leaked");
    }
}

#[test]
fn namespaces_are_removed_when_a_test_panics() {
    let mut name = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = NetNs::new("panics").expect("netns");
        name = ns.name().to_owned();
        panic!("test body fails");
    }));
    assert!(result.is_err());
    assert!(!name.is_empty() && !netns_exists(&name), "{name} leaked after a panic");
}

#[test]
fn leftovers_of_a_killed_run_are_swept() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hold-topology"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hold-topology");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read names");
    let held: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    assert_eq!(held.len(), 3, "unexpected hold-topology output {line:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    // The kill left real state behind...
    assert!(netns_exists(&held[0]) && netns_exists(&held[1]), "expected leftovers after SIGKILL");
    assert!(Path::new(&held[2]).exists(), "expected a leftover pin dir");
    // ...and the sweep removes exactly that kind of thing (another test process may have swept
    // it first, so only the outcome is checked).
    sweep_stale().expect("sweep");
    for name in &held[..2] {
        assert!(!netns_exists(name), "{name} survived the sweep");
    }
    assert!(!Path::new(&held[2]).exists(), "pin dir survived the sweep");
}

#[test]
fn pin_dir_lives_on_bpffs_and_is_removed() {
    let dir = PinDir::new("pins").expect("pin dir");
    let path = dir.path().to_owned();
    assert!(skiff_agent::datapath::bpffs::is_bpffs(&path), "{} is not on bpffs", path.display());
    drop(dir);
    assert!(!path.exists());
}
