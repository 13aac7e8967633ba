use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn config(nodes: &[&str]) -> InitConfig {
    InitConfig {
        server: "https://10.100.0.1:6443".into(),
        apiserver_sans: vec!["10.100.0.1".into(), "api.skiff.test".into()],
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        ..InitConfig::default()
    }
}

fn actions(done: &[Done]) -> Vec<(String, &'static str)> {
    done.iter().map(|d| (d.what.clone(), d.action)).collect()
}

fn cert_of_kubeconfig(path: &Path) -> inspect::CertInfo {
    let client = kubeconfig::client_of(&files::read(path).expect("read")).expect("client");
    inspect::parse_pem(&client.cert_pem).expect("parse")
}

#[test]
fn init_issues_every_identity_signed_by_one_ca_with_private_files_0600() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path());
    let done = pki.init(&config(&["n1", "n2"])).expect("init");
    assert!(done.iter().all(|d| d.action == "created"), "{done:?}");

    let ca = inspect::parse_pem(&files::read(&pki.ca_cert()).expect("ca")).expect("ca parses");
    assert!(ca.is_ca);
    let api = inspect::parse_pem(&files::read(&pki.apiserver_cert()).expect("crt")).expect("parses");
    assert_eq!((api.issuer.as_str(), api.is_ca), (ca.common_name.as_str(), false));
    for san in ["kubernetes.default.svc", "127.0.0.1", "10.96.0.1", "10.100.0.1", "api.skiff.test"] {
        assert!(api.sans.iter().any(|s| s == san), "{san} missing from {:?}", api.sans);
    }
    let admin = cert_of_kubeconfig(&pki.admin_kubeconfig());
    assert_eq!(
        (admin.common_name.as_str(), admin.organizations.as_slice()),
        ("kubernetes-admin", &["system:masters".to_owned()][..])
    );
    let node = cert_of_kubeconfig(&pki.node_kubeconfig("n2"));
    assert_eq!(node.common_name, "system:node:n2");
    assert_eq!(node.organizations, ["system:nodes"]);
    assert_eq!(cert_of_kubeconfig(&dir.path().join("scheduler.conf")).common_name, "system:kube-scheduler");

    for secret in
        [pki.ca_key(), pki.apiserver_key(), pki.sa_key(), pki.admin_kubeconfig(), pki.node_kubeconfig("n1")]
    {
        let mode = std::fs::metadata(&secret).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", secret.display());
    }
    let kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&files::read(&pki.admin_kubeconfig()).expect("read")).expect("yaml");
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://10.100.0.1:6443");
}

#[test]
fn init_again_keeps_what_is_valid_and_issues_only_what_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path());
    pki.init(&config(&["n1"])).expect("init");
    let ca_before = files::read(&pki.ca_cert()).expect("ca");
    let n1_before = files::read(&pki.node_kubeconfig("n1")).expect("n1");

    let again = pki.init(&config(&["n1"])).expect("init again");
    assert!(again.iter().all(|d| d.action == "kept"), "{again:?}");

    let mut wider = config(&["n1", "n2"]);
    wider.apiserver_sans.push("10.100.0.2".into());
    let done = actions(&pki.init(&wider).expect("init with more"));
    assert!(done.contains(&("kube-apiserver".into(), "reissued")), "{done:?}");
    assert!(done.contains(&("system:node:n2".into(), "created")), "{done:?}");
    assert!(done.contains(&("system:node:n1".into(), "kept")), "{done:?}");
    assert_eq!(files::read(&pki.ca_cert()).expect("ca"), ca_before, "the CA is never replaced");
    assert_eq!(files::read(&pki.node_kubeconfig("n1")).expect("n1"), n1_before);
    assert!(pki.init(&config(&["bad/name"])).is_err());
}

#[test]
fn check_expiration_and_renew_keep_keys_and_extend_lifetimes() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path());
    let mut short = config(&["n1"]);
    short.cert_days = 2;
    pki.init(&short).expect("init");
    let rows = pki.check_expiration().expect("check");
    assert_eq!(rows[0].name, "ca");
    assert!(rows[0].is_ca && rows[0].residual_days >= 3648, "{rows:?}");
    let api = rows.iter().find(|r| r.name == "apiserver").expect("apiserver row");
    assert!((1..=2).contains(&api.residual_days), "{api:?}");
    assert!(rows.iter().any(|r| r.name == "nodes/n1.conf"));
    let table = expiry_table(&rows);
    assert!(table.starts_with("CERTIFICATE") && table.contains("admin.conf"), "{table}");

    let key_before = files::read(&pki.apiserver_key()).expect("key");
    let admin_key_before =
        kubeconfig::client_of(&files::read(&pki.admin_kubeconfig()).expect("admin")).expect("c").key_pem;
    let mut longer = short.clone();
    longer.cert_days = 90;
    files::write_public(
        &dir.path().join("pki/init.json"),
        serde_json::to_string(&longer).expect("json").as_bytes(),
    )
    .expect("config");
    let renewed = pki.renew("all").expect("renew");
    assert_eq!(renewed.len(), 6, "{renewed:?}");
    assert!(renewed.iter().any(|n| n == "apiserver-kubelet-client"), "{renewed:?}");
    let rows = pki.check_expiration().expect("check");
    assert!(rows.iter().skip(1).all(|r| (89..=90).contains(&r.residual_days)), "{rows:?}");
    assert_eq!(files::read(&pki.apiserver_key()).expect("key"), key_before, "renewal keeps the key");
    let admin_key =
        kubeconfig::client_of(&files::read(&pki.admin_kubeconfig()).expect("admin")).expect("c").key_pem;
    assert_eq!(admin_key, admin_key_before);
    let err = pki.renew("nope").expect_err("unknown name");
    assert!(err.to_string().contains("known: all, apiserver"), "{err}");
}

#[test]
fn the_kubernetes_service_ip_is_the_first_of_the_range() {
    assert_eq!(kubernetes_service_ip("10.96.0.0/12").expect("ip"), Ipv4Addr::new(10, 96, 0, 1));
    assert_eq!(kubernetes_service_ip("172.20.5.7/16").expect("ip"), Ipv4Addr::new(172, 20, 0, 1));
    assert!(kubernetes_service_ip("10.96.0.0").is_err());
}
