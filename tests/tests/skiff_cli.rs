//! `skiff drops` and `skiff maps` against a real loaded datapath: packets run through `skiff_lb`
//! move the counters and fill the maps, and the CLI, reading only the pins, reports exactly that
//! in every output format; bad input gets one line and a non-zero exit.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::{Command, Output},
};

use common::Svc;
use serde_json::Value;
use skiff_agent::datapath::{Datapath, DatapathConfig, LbCapacity, LogLevel};
use skiff_common::{DropReason, lb::LbConfig};
use skiff_tests::{
    PinDir,
    packet::{Frame, PROTO_TCP, TCP_SYN},
};

const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 40000);
const WEB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
const EMPTY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 20), 80);

/// The `skiff` binary beside this test's directory (cargo builds the package's binaries for its
/// tests).
fn skiff_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir: PathBuf = exe.parent().and_then(|d| d.parent()).expect("target dir").to_owned();
    let bin = dir.join("skiff");
    assert!(bin.exists(), "{} has no skiff: build the workspace first", dir.display());
    bin
}

fn skiff(args: &[&str]) -> Output {
    Command::new(skiff_bin()).args(args).output().expect("run skiff")
}

fn ok(args: &[&str]) -> String {
    let out = skiff(args);
    assert!(out.status.success(), "skiff {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not a one-line error: {stderr:?}");
    assert!(stderr.starts_with("skiff: "), "{stderr:?}");
    stderr
}

/// A datapath with WEB (three backends, filling the backend map) and EMPTY (none) programmed.
struct Node {
    dp: Datapath,
    pins: PinDir,
}

impl Node {
    fn new(label: &str) -> Node {
        let pins = PinDir::new(label).expect("pin dir");
        let lb = LbCapacity {
            config: LbConfig { maglev_m: 251, ..LbConfig::DEFAULT },
            max_services: 64,
            max_backends: 3,
            max_ct: 1024,
            max_affinity: 256,
            max_frags: 64,
        };
        let config = DatapathConfig { pin_dir: pins.path().to_owned(), log_level: LogLevel::Off, lb };
        let mut dp = Datapath::load(&config).expect("load datapath");
        let pods = [11, 12, 13].map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, i), 8080));
        let backends = pods.iter().enumerate().map(|(i, a)| (i as u32 + 1, *a)).collect();
        Svc { frontend: WEB, proto: PROTO_TCP, row: 1, flags: 0, backends }.program(&mut dp);
        Svc { frontend: EMPTY, proto: PROTO_TCP, row: 2, flags: 0, backends: vec![] }.program(&mut dp);
        Node { dp, pins }
    }

    fn syn_to(&self, frontend: SocketAddrV4, client_port: u16) {
        let client = SocketAddrV4::new(*CLIENT.ip(), client_port);
        let packet = Frame::tcp(client, frontend, TCP_SYN).bytes();
        let mut out = vec![0u8; packet.len() + 128];
        self.dp.test_run_lb(&packet, &mut out, 1).expect("test run");
    }

    fn pin_dir(&self) -> String {
        self.pins.path().display().to_string()
    }
}

#[test]
fn drops_reports_each_reason_from_the_pins() {
    let node = Node::new("cli-drops");
    for port in [40001, 40002, 40003] {
        node.syn_to(EMPTY, port);
    }
    node.syn_to(WEB, 40004);
    let dir = node.pin_dir();

    let rows: Value = serde_json::from_str(&ok(&["drops", "--pin-dir", &dir, "-o", "json"])).expect("json");
    let rows = rows.as_array().expect("a list");
    assert_eq!(rows.len(), DropReason::ALL.len(), "one row per reason");
    for row in rows {
        let expected = if row["name"] == "NoEndpoints" { 3 } else { 0 };
        assert_eq!(row["count"], expected, "{row}");
    }
    assert_eq!(rows[0]["reason"], DropReason::NoEndpoints.slot());
    assert_eq!(rows[0]["description"], DropReason::NoEndpoints.as_str());

    let yaml: Value = serde_yaml::from_str(&ok(&["drops", "--pin-dir", &dir, "-o", "yaml"])).expect("yaml");
    assert_eq!(&yaml, &Value::Array(rows.clone()), "YAML and JSON say the same");

    let table = ok(&["drops", "--pin-dir", &dir]);
    let line = table.lines().find(|l| l.contains("NoEndpoints")).expect("a NoEndpoints line");
    assert_eq!(line.split_whitespace().nth(2), Some("3"), "{table}");
}

#[test]
fn maps_reports_capacity_and_fill_and_flags_a_full_map() {
    let node = Node::new("cli-maps");
    node.syn_to(WEB, 40001);
    node.syn_to(WEB, 40002);
    let dir = node.pin_dir();

    let rows: Value = serde_json::from_str(&ok(&["maps", "--pin-dir", &dir, "-o", "json"])).expect("json");
    let by_name = |name: &str| -> Value {
        rows.as_array()
            .expect("list")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}"))
    };
    // Two frontends and their two ClusterIP markers; three backends of three slots.
    let svc = by_name("SKIFF_SVC");
    assert_eq!(
        (svc["kind"].as_str(), svc["max_entries"].as_u64(), svc["entries"].as_u64()),
        (Some("Hash"), Some(64), Some(4))
    );
    let backends = by_name("SKIFF_BACKENDS");
    assert_eq!((backends["entries"].as_u64(), backends["near_full"].as_bool()), (Some(3), Some(true)));
    assert_eq!(backends["fill_percent"].as_f64(), Some(100.0));
    // Two flows, one conntrack entry each way.
    let ct = by_name("SKIFF_CT");
    assert_eq!(
        (ct["kind"].as_str(), ct["entries"].as_u64(), ct["near_full"].as_bool()),
        (Some("LruHash"), Some(2), Some(false))
    );
    assert_eq!(by_name("SKIFF_RNAT")["entries"].as_u64(), Some(2));
    // Arrays have no fill.
    let maglev = by_name("SKIFF_MAGLEV");
    assert_eq!((maglev["kind"].as_str(), maglev["max_entries"].as_u64()), (Some("Array"), Some(64 * 251)));
    assert!(maglev.get("entries").is_none(), "{maglev}");

    let table = ok(&["maps", "--pin-dir", &dir]);
    let line = table.lines().find(|l| l.starts_with("SKIFF_BACKENDS")).expect("backends line");
    assert!(line.ends_with("near full"), "{table}");
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let err = one_line_error(&skiff(&["drops", "--pin-dir", "/sys/fs/bpf/skiff-cli-never-created"]));
    assert!(err.contains("is skiff-agent running"), "{err}");
    let empty = PinDir::new("cli-empty").expect("pin dir");
    let err = one_line_error(&skiff(&["maps", "--pin-dir", &empty.path().display().to_string()]));
    assert!(err.contains("has no SKIFF_"), "{err}");

    let node = Node::new("cli-nobody");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(skiff_bin())
        .args(["drops", "--pin-dir", &node.pin_dir()])
        .output()
        .expect("run setpriv");
    let err = one_line_error(&out);
    assert!(err.contains("needs root"), "{err}");

    let out = skiff(&["drops", "--watch", "--interval", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a positive number of seconds"));
}

#[test]
fn completions_cover_every_command_and_version_prints_the_crate_version() {
    let bash = ok(&["completions", "bash"]);
    for command in ["svc", "ct", "trace", "explain", "drops", "maps", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    assert!(ok(&["completions", "zsh"]).starts_with("#compdef skiff"));
    let version = ok(&["version"]);
    assert_eq!(version.trim(), format!("skiff {}", env!("CARGO_PKG_VERSION")));
    let out = skiff(&["completions", "tcsh"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}
