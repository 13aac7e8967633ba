//! The real `skiff-control serve --pki-dir` process over HTTPS: the PKI `init` made, kubectl and
//! kube-rs with the admin kubeconfig, bearer tokens, and what is refused — no credentials (401),
//! a wrong token (401), an expired certificate and one from a foreign CA (the handshake fails) —
//! and garbage on the wire that must neither crash nor wedge the server.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Node, Pod, Secret},
    rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding},
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use skiff_control::pki::{self, InitConfig, Pki, issue};

struct Server {
    child: Child,
    addr: SocketAddr,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path().join("pki"));
    let config = InitConfig { nodes: vec!["n1".into(), "n2".into()], ..InitConfig::default() };
    pki.init(&config).expect("init");
    std::fs::write(dir.path().join("tokens.csv"), "s3cret-token,alice,1001,\"dev\"\n").expect("tokens");
    let (child, addr) = common::spawn_serve(|cmd| {
        cmd.arg("--data-dir").arg(dir.path().join("data")).arg("--pki-dir").arg(pki.root());
        cmd.arg("--token-auth-file").arg(dir.path().join("tokens.csv"));
    });
    Server { child, addr, pki, _dir: dir }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio")
}

impl Server {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A client from `kubeconfig`, pointed at this server.
    async fn client_from(&self, kubeconfig: &Path) -> Client {
        common::client_from(kubeconfig, Some(&self.url())).await
    }

    /// A client trusting the CA, with no identity, or with a bearer token.
    fn client_with(&self, token: Option<&str>) -> Client {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        let ca = std::fs::read(self.pki.ca_cert()).expect("ca");
        config.root_cert = Some(vec![
            rustls_pki_types::pem::PemObject::from_pem_slice(&ca)
                .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
                .expect("ca der"),
        ]);
        config.auth_info.token = token.map(|t| t.to_owned().into());
        Client::try_from(config).expect("client")
    }

    /// `kubectl args…` as the admin; its stdout (a failure fails the test).
    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.pki.admin_kubeconfig())
            .args(["--server", &self.url()])
            .args(args)
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// A kubeconfig like admin.conf whose client certificate is `client`.
    fn kubeconfig_with(&self, dir: &Path, name: &str, client: &issue::Issued) -> PathBuf {
        let text = pki::kubeconfig::with_client(
            &std::fs::read_to_string(self.pki.admin_kubeconfig()).expect("admin"),
            client,
        )
        .expect("kubeconfig");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

async fn list_namespaces(client: Client) -> Result<usize, kube::Error> {
    Api::<Namespace>::all(client).list(&ListParams::default()).await.map(|l| l.items.len())
}

fn code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// Creates `object` through `api` (as whoever `api`'s client is).
async fn create<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(object).expect("object"))
        .await
        .expect("create")
}

#[test]
fn rbac_grants_what_bindings_say_and_a_403_names_verb_and_resource() {
    let server = start();
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        let alice = server.client_with(Some("s3cret-token"));
        let err = list_namespaces(alice.clone()).await.expect_err("no role yet");
        assert_eq!(code(&err), Some(403));
        assert_eq!(
            message(&err),
            "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        );
        // The default policy is there for kubectl to see.
        let roles: Api<ClusterRole> = Api::all(admin.clone());
        for name in ["cluster-admin", "admin", "edit", "view", "system:discovery"] {
            roles.get(name).await.unwrap_or_else(|e| panic!("default ClusterRole {name}: {e}"));
        }
        // Group "dev" may list namespaces; alice is in it.
        create(&Api::<ClusterRole>::all(admin.clone()), json!({"metadata": {"name": "ns-reader"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}]})).await;
        create(&Api::<ClusterRoleBinding>::all(admin.clone()), json!({"metadata": {"name": "dev-ns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ns-reader"},
            "subjects": [{"kind": "Group", "name": "dev"}]})).await;
        assert!(list_namespaces(alice.clone()).await.is_ok(), "bound through her group");
        // view in one namespace only.
        create(&Api::<RoleBinding>::namespaced(admin.clone(), "default"), json!({"metadata": {"name": "alice-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}]})).await;
        let pods = |ns: &str| Api::<Pod>::namespaced(alice.clone(), ns);
        assert!(pods("default").list(&ListParams::default()).await.is_ok());
        let err = pods("kube-system").list(&ListParams::default()).await.expect_err("not in kube-system");
        assert_eq!(code(&err), Some(403));
        let err = Api::<Secret>::namespaced(alice.clone(), "default").list(&ListParams::default()).await.expect_err("view has no secrets");
        assert!(message(&err).contains("cannot list resource \"secrets\""), "{}", message(&err));
        // Discovery is open to every authenticated user.
        assert!(alice.list_core_api_versions().await.is_ok());
    });
}

#[test]
fn a_node_may_touch_only_its_own_node_lease_pods_and_their_secrets() {
    let server = start();
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        for n in ["n1", "n2"] {
            create(&Api::<Node>::all(admin.clone()), json!({"metadata": {"name": n}})).await;
            create(&Api::<Lease>::namespaced(admin.clone(), "kube-node-lease"), json!({"metadata": {"name": n}, "spec": {"holderIdentity": n}})).await;
            create(&Api::<Secret>::namespaced(admin.clone(), "default"), json!({"metadata": {"name": format!("{n}-secret")}, "stringData": {"k": "v"}})).await;
            create(&Api::<Pod>::namespaced(admin.clone(), "default"), json!({"metadata": {"name": format!("on-{n}")}, "spec": {"nodeName": n,
                "containers": [{"name": "c", "image": "busybox", "envFrom": [{"secretRef": {"name": format!("{n}-secret")}}]}]}})).await;
        }
        let n1 = server.client_from(&server.pki.node_kubeconfig("n1")).await;
        let nodes: Api<Node> = Api::all(n1.clone());
        let label = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
        nodes.patch("n1", &PatchParams::default(), &label).await.expect("its own Node");
        let err = nodes.patch("n2", &PatchParams::default(), &label).await.expect_err("another Node");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(message(&err).contains("cannot patch resource \"nodes\""), "{}", message(&err));

        let leases: Api<Lease> = Api::namespaced(n1.clone(), "kube-node-lease");
        let renew = Patch::Merge(json!({"spec": {"renewTime": "2026-12-07T08:00:00.000000Z"}}));
        leases.patch("n1", &PatchParams::default(), &renew).await.expect("its own Lease");
        assert_eq!(code(&leases.patch("n2", &PatchParams::default(), &renew).await.expect_err("n2's Lease")), Some(403));

        let pods: Api<Pod> = Api::namespaced(n1.clone(), "default");
        let running = Patch::Merge(json!({"status": {"phase": "Running"}}));
        pods.patch_status("on-n1", &PatchParams::default(), &running).await.expect("status of its own pod");
        let err = pods.patch_status("on-n2", &PatchParams::default(), &running).await.expect_err("n2's pod");
        assert_eq!(code(&err), Some(403));
        assert_eq!(code(&pods.delete("on-n2", &Default::default()).await.expect_err("delete n2's pod")), Some(403));

        let secrets: Api<Secret> = Api::namespaced(n1, "default");
        secrets.get("n1-secret").await.expect("the secret its pod uses");
        let err = secrets.get("n2-secret").await.expect_err("a secret of a pod elsewhere");
        assert_eq!(code(&err), Some(403));
        assert!(message(&err).contains("no relationship found between node 'n1'"), "{}", message(&err));
    });
}

#[test]
fn admin_kubeconfig_and_tokens_work_and_everyone_else_is_refused() {
    let server = start();
    let scratch = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        assert!(list_namespaces(admin).await.expect("admin lists namespaces") >= 4);
        // A node and a token holder are authenticated; what they may do is RBAC's business.
        let node = server.client_from(&server.pki.node_kubeconfig("n1")).await;
        let err = list_namespaces(node).await.expect_err("nodes do not list namespaces");
        assert_eq!(code(&err), Some(403), "{err}");
        let err =
            list_namespaces(server.client_with(Some("s3cret-token"))).await.expect_err("alice has no role");
        assert_eq!(code(&err), Some(403), "{err}");

        let anonymous = list_namespaces(server.client_with(None)).await.expect_err("anonymous refused");
        assert_eq!(code(&anonymous), Some(401), "{anonymous}");
        let wrong = list_namespaces(server.client_with(Some("guess"))).await.expect_err("wrong token");
        assert_eq!(code(&wrong), Some(401), "{wrong}");

        // Health and version stay open to anyone.
        let version = server.client_with(None).apiserver_version().await.expect("version is public");
        assert_eq!(version.major, "1");

        // A certificate of this CA that has expired, and one of a CA the server never heard of.
        let ca = server.pki.ca().expect("ca");
        let subject = issue::Subject {
            common_name: "kubernetes-admin".into(),
            organizations: vec!["system:masters".into()],
            sans: vec![],
            usage: issue::Usage::Client,
        };
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(10);
        let expired = ca.issue(&subject, long_ago, time::Duration::days(1)).expect("expired cert");
        let path = server.kubeconfig_with(scratch.path(), "expired.conf", &expired);
        let err = list_namespaces(server.client_from(&path).await).await.expect_err("expired certificate");
        // Refused in the handshake (the server's TLS alert), not by a handler.
        assert!(format!("{err:?}").contains("AlertReceived(CertificateExpired)"), "{err:?}");

        let foreign = issue::new_ca("someone-else", time::Duration::days(30)).expect("foreign CA");
        let foreign = issue::Ca::load(&foreign.cert_pem, &foreign.key_pem).expect("load");
        let stranger = foreign
            .issue(
                &subject,
                time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                time::Duration::days(1),
            )
            .expect("foreign cert");
        let path = server.kubeconfig_with(scratch.path(), "foreign.conf", &stranger);
        let err = list_namespaces(server.client_from(&path).await).await.expect_err("foreign CA");
        assert!(format!("{err:?}").contains("AlertReceived("), "{err:?}");
    });

    // kubectl with the generated kubeconfig (its server URL named the default port; point it here).
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.pki.admin_kubeconfig())
        .args(["--server", &server.url(), "get", "namespaces", "-o", "name"])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));
}

/// xorshift64*: a fixed, reproducible stream of bytes for the garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A TLS 1.2 ClientHello record header and the start of a handshake: what a real client's first
/// bytes look like, so mutations reach past the first byte check.
const HELLO_PREFIX: [u8; 9] = [0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4];

#[test]
fn garbage_and_stalled_handshakes_neither_crash_nor_wedge_the_server() {
    let server = start();
    // Connections that send half a handshake and then nothing, held open throughout.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connect");
            s.write_all(&HELLO_PREFIX[..5]).expect("write");
            s
        })
        .collect();
    // A fixed budget of malformed first flights: random bytes, mutated ClientHellos, plain HTTP.
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    for round in 0..300 {
        let Ok(mut s) = TcpStream::connect(server.addr) else { panic!("connect refused at round {round}") };
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let len = (rng.next() % 600) as usize;
        let payload = match round % 3 {
            0 => rng.bytes(len),
            1 => {
                let mut p = HELLO_PREFIX.to_vec();
                p.extend(rng.bytes(len));
                p
            }
            _ => b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        };
        let _ = s.write_all(&payload);
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    // Still serving, promptly, with the stalled connections still open.
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        let listed = tokio::time::timeout(Duration::from_secs(10), list_namespaces(admin)).await;
        assert!(matches!(listed, Ok(Ok(n)) if n >= 4), "server wedged or failing: {listed:?}");
    });
    drop(stalled);
}

#[test]
fn service_account_tokens_from_kubectl_authenticate_until_the_account_is_gone() {
    let server = start();
    let kubectl = |args: &[&str]| server.kubectl(args);
    kubectl(&["create", "serviceaccount", "robot"]);
    // TokenRequest, sent by kubectl as protobuf.
    let token = kubectl(&["create", "token", "robot", "--duration", "20m"]).trim().to_owned();
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    runtime().block_on(async {
        let robot = server.client_with(Some(&token));
        let pods = Api::<Pod>::namespaced(robot.clone(), "default");
        let err = pods.list(&ListParams::default()).await.expect_err("no role yet");
        assert_eq!(code(&err), Some(403));
        assert!(message(&err).contains("User \"system:serviceaccount:default:robot\""), "{}", message(&err));
    });
    kubectl(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole",
        "view",
        "--serviceaccount",
        "default:robot",
    ]);
    runtime().block_on(async {
        let pods = Api::<Pod>::namespaced(server.client_with(Some(&token)), "default");
        pods.list(&ListParams::default()).await.expect("view through the RoleBinding");
    });
    kubectl(&["delete", "serviceaccount", "robot"]);
    runtime().block_on(async {
        let pods = Api::<Pod>::namespaced(server.client_with(Some(&token)), "default");
        let err = pods.list(&ListParams::default()).await.expect_err("its account is gone");
        assert_eq!(code(&err), Some(401), "{err}");
        // A token with one byte of its signature changed.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        let err = list_namespaces(server.client_with(Some(&forged))).await.expect_err("forged");
        assert_eq!(code(&err), Some(401), "{err}");
    });
}

/// A PEM CSR for `cn` in `orgs`, with its key.
fn csr(cn: &str, orgs: &[&str]) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for o in orgs {
        params.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
    }
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    (params.serialize_request(&key).expect("csr").pem().expect("pem"), key)
}

fn csr_object(pem: &str) -> k8s_openapi::api::certificates::v1::CertificateSigningRequest {
    use base64::Engine as _;
    serde_json::from_value(json!({
        "metadata": {"generateName": "node-csr-"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                 "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                 "usages": ["digital signature", "key encipherment", "client auth"]},
    }))
    .expect("csr object")
}

#[test]
fn nodes_join_with_bootstrap_tokens_and_other_requests_wait_for_an_administrator() {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let server = start();
    let scratch = tempfile::tempdir().expect("tmp");
    let bootstrap = scratch.path().join("bootstrap.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-control"))
        .args(["token", "create", "--ttl-hours", "1", "--server", &server.url()])
        .arg("--pki-dir")
        .arg(server.pki.root())
        .arg("--write-bootstrap-kubeconfig")
        .arg(&bootstrap)
        .output()
        .expect("token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert!(skiff_control::auth::bootstrap::parse(&token).is_some(), "{token}");
    runtime().block_on(async {
        let joiner = server.client_from(&bootstrap).await;
        // The token may ask for a certificate and nothing else.
        assert_eq!(code(&list_namespaces(joiner.clone()).await.expect_err("no listing")), Some(403));
        let csrs: Api<CertificateSigningRequest> = Api::all(joiner.clone());
        let (pem, key) = csr("system:node:n9", &["system:nodes"]);
        let created = csrs.create(&PostParams::default(), &csr_object(&pem)).await.expect("create CSR");
        let spec = &created.spec;
        assert_eq!(spec.username.as_deref(), Some(format!("system:bootstrap:{}", &token[..6]).as_str()));
        let status = created.status.expect("status");
        assert!(status.conditions.iter().flatten().any(|c| c.type_ == "Approved" && c.status == "True"));
        let cert = String::from_utf8(status.certificate.expect("signed").0).expect("PEM");
        let info = pki::inspect::parse_pem(&cert).expect("parses");
        assert_eq!((info.common_name.as_str(), info.issuer.as_str()), ("system:node:n9", "skiff-ca"));

        // The new identity is node n9's and no other's.
        let issued = issue::Issued { cert_pem: cert, key_pem: key.serialize_pem() };
        let path = server.kubeconfig_with(scratch.path(), "n9.conf", &issued);
        let n9 = server.client_from(&path).await;
        let nodes: Api<Node> = Api::all(n9);
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "n9"}})).expect("node"),
            )
            .await
            .expect("n9 registers");
        let label = Patch::Merge(json!({"metadata": {"labels": {"joined": "yes"}}}));
        nodes.patch("n9", &PatchParams::default(), &label).await.expect("its own Node");
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        Api::<Node>::all(admin)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("n1"),
            )
            .await
            .expect("n1");
        assert_eq!(
            code(&nodes.patch("n1", &PatchParams::default(), &label).await.expect_err("n1's")),
            Some(403)
        );

        // A request for more than a node's identity is left pending: no approval, no certificate.
        let (pem, _) = csr("system:node:n9", &["system:masters"]);
        let pending = csrs.create(&PostParams::default(), &csr_object(&pem)).await.expect("create CSR");
        let status = pending.status.unwrap_or_default();
        assert!(status.certificate.is_none() && status.conditions.is_none(), "{status:?}");

        // A token of the right shape that the cluster never issued.
        let err =
            list_namespaces(server.client_with(Some("abcdef.0123456789abcdef"))).await.expect_err("unknown");
        assert_eq!(code(&err), Some(401), "{err}");
    });
    // A user's certificate, approved by hand with kubectl.
    let (pem, jane_key) = csr("jane", &["dev"]);
    let mut request = csr_object(&pem);
    request.metadata.generate_name = None;
    request.metadata.name = Some("jane".into());
    request.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    request.spec.usages = Some(vec!["client auth".into()]);
    let (deny_pem, _) = csr("mallory", &[]);
    let mut denied = csr_object(&deny_pem);
    denied.metadata.generate_name = None;
    denied.metadata.name = Some("mallory".into());
    denied.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = Api::all(admin);
        let pending = csrs.create(&PostParams::default(), &request).await.expect("jane's CSR");
        assert!(pending.status.unwrap_or_default().certificate.is_none(), "not for auto-approval");
        csrs.create(&PostParams::default(), &denied).await.expect("mallory's CSR");
    });
    let kubectl = |args: &[&str]| server.kubectl(args);
    kubectl(&["certificate", "approve", "jane"]);
    kubectl(&["certificate", "deny", "mallory"]);
    runtime().block_on(async {
        let admin = server.client_from(&server.pki.admin_kubeconfig()).await;
        let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = Api::all(admin);
        let mallory = csrs.get("mallory").await.expect("mallory").status.unwrap_or_default();
        assert!(mallory.certificate.is_none());
        assert!(mallory.conditions.iter().flatten().any(|c| c.type_ == "Denied"), "{mallory:?}");
        let jane = csrs.get("jane").await.expect("jane").status.unwrap_or_default();
        let cert = String::from_utf8(jane.certificate.expect("signed on approval").0).expect("PEM");
        let issued = issue::Issued { cert_pem: cert, key_pem: jane_key.serialize_pem() };
        let path = server.kubeconfig_with(scratch.path(), "jane.conf", &issued);
        let err = list_namespaces(server.client_from(&path).await).await.expect_err("jane has no role");
        assert_eq!(code(&err), Some(403));
        assert!(message(&err).contains("User \"jane\""), "{}", message(&err));
    });
    // What an administrator sees.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.pki.admin_kubeconfig())
        .args(["--server", &server.url(), "get", "csr"])
        .output()
        .expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("REQUESTOR") && table.contains("Approved,Issued") && table.contains("Pending"),
        "{table}"
    );
    assert!(table.contains(&format!("system:bootstrap:{}", &token[..6])), "{table}");
}

/// A base64 PEM CSR for `cn` in `system:nodes` naming `sans`.
fn serving_csr(cn: &str, sans: &[&str]) -> k8s_openapi::api::certificates::v1::CertificateSigningRequest {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let pem = params.serialize_request(&key).expect("csr").pem().expect("pem");
    serde_json::from_value(json!({
        "metadata": {"generateName": "kubelet-serving-"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(pem),
                 "signerName": "kubernetes.io/kubelet-serving",
                 "usages": ["digital signature", "key encipherment", "server auth"]},
    }))
    .expect("csr object")
}

#[test]
fn nodes_get_serving_certificates_for_their_own_addresses_and_reviews_answer_who_may_do_what() {
    use k8s_openapi::api::{
        authorization::v1::SubjectAccessReview, certificates::v1::CertificateSigningRequest,
    };
    let server = start();
    runtime().block_on(async {
        let n1 = server.client_from(&server.pki.node_kubeconfig("n1")).await;
        let node = json!({"metadata": {"name": "n1"}});
        Api::<Node>::all(n1.clone())
            .create(&PostParams::default(), &serde_json::from_value(node).expect("node"))
            .await
            .expect("n1 registers");
        let status = Patch::Merge(json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}));
        Api::<Node>::all(n1.clone()).patch_status("n1", &PatchParams::default(), &status).await.expect("status");

        // Its own name and address: signed at once, for serving.
        let csrs: Api<CertificateSigningRequest> = Api::all(n1.clone());
        let signed = csrs
            .create(&PostParams::default(), &serving_csr("system:node:n1", &["n1", "10.0.0.1"]))
            .await
            .expect("create");
        let cert = String::from_utf8(signed.status.and_then(|s| s.certificate).expect("signed").0).expect("PEM");
        let info = pki::inspect::parse_pem(&cert).expect("parses");
        assert_eq!(info.sans, ["n1", "10.0.0.1"]);
        assert!(cert_is_for_serving(&cert), "a serving certificate");
        // An address it does not report, another node's name, or one of the API server's own
        // names even when the node claims it in its status: left for an administrator.
        let claim = Patch::Merge(json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "127.0.0.1"}, {"type": "InternalIP", "address": "10.96.0.1"}]}}));
        Api::<Node>::all(n1.clone()).patch_status("n1", &PatchParams::default(), &claim).await.expect("status");
        for (cn, sans) in [
            ("system:node:n1", ["n1", "10.9.9.9"]),
            ("system:node:n2", ["n2", "10.0.0.1"]),
            ("system:node:n1", ["n1", "127.0.0.1"]),
            ("system:node:n1", ["n1", "10.96.0.1"]),
        ] {
            let pending = csrs.create(&PostParams::default(), &serving_csr(cn, &sans)).await.expect("create");
            assert!(pending.status.unwrap_or_default().certificate.is_none(), "{cn} {sans:?} was signed");
        }

        // Reviews, as an agent asks them: the API server's kubelet client may read n1's logs,
        // another node may not.
        let reviews: Api<SubjectAccessReview> = Api::all(n1);
        let ask = |user: &str, groups: &[&str]| {
            serde_json::from_value::<SubjectAccessReview>(json!({"spec": {"user": user, "groups": groups,
                "resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": "n1"}}}))
            .expect("review")
        };
        let allowed = |r: SubjectAccessReview| r.status.expect("status").allowed;
        let apiserver = reviews
            .create(&PostParams::default(), &ask("kube-apiserver-kubelet-client", &[]))
            .await
            .expect("review");
        assert!(allowed(apiserver));
        let other = reviews
            .create(&PostParams::default(), &ask("system:node:n2", &["system:nodes"]))
            .await
            .expect("review");
        assert!(!allowed(other));
        let both = serde_json::from_value::<SubjectAccessReview>(json!({"spec": {"user": "x",
            "resourceAttributes": {"verb": "get", "resource": "pods"}, "nonResourceAttributes": {"path": "/", "verb": "get"}}}))
        .expect("review");
        let err = reviews.create(&PostParams::default(), &both).await.expect_err("both kinds of attributes");
        assert_eq!(code(&err), Some(422), "{err}");
    });
    // `kubectl auth can-i` (SelfSubjectAccessReview) for the admin and for a token user.
    let scratch = tempfile::tempdir().expect("tmp");
    let alice_conf = scratch.path().join("alice.conf");
    let ca = std::fs::read_to_string(server.pki.ca_cert()).expect("CA");
    std::fs::write(
        &alice_conf,
        pki::kubeconfig::render_token("skiff", &server.url(), &ca, "alice", "s3cret-token"),
    )
    .expect("alice.conf");
    let can_i = |kubeconfig: &Path, args: &[&str]| {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--server", &server.url(), "auth", "can-i"])
            .args(args)
            .output()
            .expect("kubectl")
    };
    let admin = can_i(&server.pki.admin_kubeconfig(), &["delete", "nodes"]);
    assert!(admin.status.success(), "{}", String::from_utf8_lossy(&admin.stderr));
    assert_eq!(String::from_utf8_lossy(&admin.stdout).trim(), "yes");
    let alice = can_i(&alice_conf, &["delete", "nodes"]);
    assert_eq!(
        String::from_utf8_lossy(&alice.stdout).trim(),
        "no",
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    assert!(!alice.status.success());
}

/// Whether a PEM certificate's extended key usage is TLS server authentication.
fn cert_is_for_serving(pem: &str) -> bool {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    let cert = pem.parse_x509().expect("certificate");
    cert.extended_key_usage().ok().flatten().is_some_and(|e| e.value.server_auth && !e.value.client_auth)
}
