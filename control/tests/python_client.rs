//! The official Python `kubernetes` client (PyPI, installed in a venv by `cargo xtask setup`)
//! against the API server; the checks are in `tests/python/client.py`.

mod common;

use std::path::PathBuf;

fn python() -> PathBuf {
    let path = std::env::var_os("SKIFF_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/skiff/pyvenv/bin/python")
    });
    assert!(
        path.exists(),
        "{} missing: run `cargo xtask setup` to install the Python client",
        path.display()
    );
    path
}

#[test]
fn the_python_client_lists_creates_patches_watches_and_deletes() {
    let rt = common::runtime();
    let server = rt.block_on(common::start(1000));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client.py");
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("admin.conf");
    std::fs::write(&kubeconfig, &server.local.kubeconfig).expect("kubeconfig");
    let out =
        std::process::Command::new(python()).arg(&script).arg(&kubeconfig).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "list namespaces ok",
        "create ok",
        "duplicate refused ok",
        "patch ok",
        "list with selector ok",
        "watch resume ok",
        "delete ok",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }
    drop(server);
}
