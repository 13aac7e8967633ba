//! `skiff-cni install`: the binary and the node's conflist land where runtimes look, and bad
//! flags get one line and a non-zero exit with nothing written.

use std::process::Command;

const PLUGIN: &str = env!("CARGO_BIN_EXE_skiff-cni");

#[test]
fn install_puts_the_plugin_and_a_conflist_in_place() {
    let dir = tempfile::tempdir().expect("tmp");
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    let out = Command::new(PLUGIN)
        .args(["install", "--subnet", "10.244.3.0/24", "--mtu", "1450", "--bin-dir"])
        .arg(&bin)
        .arg("--conf-dir")
        .arg(&conf)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-skiff.conflist")).expect("conflist"))
            .expect("json");
    assert_eq!(list["plugins"][0]["type"], "skiff-cni");
    assert_eq!(list["plugins"][0]["ipam"]["subnet"], "10.244.3.0/24");
    assert_eq!(list["plugins"][0]["mtu"], 1450);
    assert_eq!(list["plugins"][1]["type"], "portmap");
    // The installed copy works as a plugin.
    let mut version = Command::new(bin.join("skiff-cni"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("installed binary");
    drop(version.stdin.take());
    let out = version.wait_with_output().expect("version");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(answer["supportedVersions"][2], "1.1.0");
}

#[test]
fn bad_flags_get_one_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    for args in [
        &["install"][..],
        &["install", "--subnet", "10.244.3.7/24"],
        &["install", "--subnet", "10.0.0.0/24", "--frob"],
    ] {
        let out = Command::new(PLUGIN)
            .args(args)
            .arg("--conf-dir")
            .arg(dir.path().join("net.d"))
            .arg("--bin-dir")
            .arg(dir.path().join("bin"))
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(std::fs::read_dir(dir.path()).expect("dir").next().is_none(), "{args:?} wrote something");
    }
}
