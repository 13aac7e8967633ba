//! `skiff-agent` refuses bad input with one line and a non-zero exit, and leaves nothing behind.

use std::process::{Command, Output};

use skiff_tests::PinDir;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff-agent")).args(args).output().expect("run skiff-agent")
}

fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not a one-line error: {stderr:?}");
    assert!(stderr.starts_with("skiff-agent: "), "{stderr:?}");
    stderr
}

#[test]
fn nothing_to_attach_is_refused() {
    let err = one_line_error(&agent(&["datapath", "--pin-dir", "/sys/fs/bpf/skiff-cli-never-created"]));
    assert!(err.contains("nothing to attach"), "{err}");
    assert!(!std::path::Path::new("/sys/fs/bpf/skiff-cli-never-created").exists());
}

#[test]
fn pin_dir_off_bpffs_is_refused_before_it_is_created() {
    let dir = std::env::temp_dir().join(format!("skiff-cli-notbpf-{}", std::process::id()));
    let err = one_line_error(&agent(&["datapath", "--xdp", "lo", "--pin-dir", &dir.display().to_string()]));
    assert!(err.contains("not on a bpf filesystem"), "{err}");
    assert!(!dir.exists(), "refused pin dir was created");
}

#[test]
fn unknown_interface_is_refused_before_anything_is_pinned() {
    let pins = PinDir::new("cli-noiface").expect("pin dir");
    let pin_dir = pins.path().display().to_string();
    let err = one_line_error(&agent(&["datapath", "--xdp", "skiffnope0", "--pin-dir", &pin_dir]));
    assert!(err.contains("skiffnope0"), "{err}");
    let left: Vec<_> = std::fs::read_dir(pins.path()).expect("read pin dir").collect();
    assert!(left.is_empty(), "a refused start pinned {left:?}");
}

#[test]
fn unprivileged_user_gets_a_clear_error() {
    let pins = PinDir::new("cli-nobody").expect("pin dir");
    let pin_dir = pins.path().display().to_string();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_skiff-agent"))
        .args(["datapath", "--xdp", "lo", "--pin-dir", &pin_dir])
        .output()
        .expect("run setpriv");
    let err = one_line_error(&out);
    assert!(err.contains("needs root"), "{err}");
}

#[test]
fn bad_log_level_is_refused_by_the_parser_naming_the_choices() {
    let out = agent(&["datapath", "--xdp", "lo", "--datapath-log-level", "loud"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'loud'") && stderr.contains("debug"), "{stderr}");
}

#[test]
fn service_proxy_with_an_unreadable_kubeconfig_says_so_in_one_line() {
    let err = one_line_error(&agent(&[
        "service-proxy",
        "--kubeconfig",
        "/nonexistent/skiff-kubeconfig",
        "--lb-iface",
        "lo",
    ]));
    assert!(err.contains("/nonexistent/skiff-kubeconfig"), "{err}");
}

#[test]
fn service_proxy_refuses_an_unknown_interface() {
    let err = one_line_error(&agent(&["service-proxy", "--lb-iface", "skiffnope1"]));
    assert!(err.contains("skiffnope1"), "{err}");
}
