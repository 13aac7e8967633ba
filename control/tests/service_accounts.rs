//! ServiceAccounts through the real API server (in-process, HTTPS, authenticated and
//! authorized): namespaces get their `default` account and the root CA, pods get the projected
//! token volume (or 403 for a missing account), nodes mint only tokens bound to their own pods,
//! and a pod-bound token stops authenticating once its pod is gone.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

use common::{Server, eventually, runtime};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

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

async fn create<K>(api: &Api<K>, object: Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(object).expect("object")).await
}

/// A client of `server` acting as `user` in `groups` (a client certificate from its CA).
async fn client_as(server: &Server, user: &str, groups: &[&str]) -> Client {
    let text = server.local.kubeconfig_for(user, groups).expect("kubeconfig");
    let raw = kube::config::Kubeconfig::from_yaml(&text).expect("yaml");
    let mut config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await.expect("config");
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// A client of `server` with only a bearer token.
fn client_with_token(server: &Server, token: &str) -> Client {
    let mut config = kube::Config::new(server.url.parse().expect("url"));
    let ca = std::fs::read(server.local.pki.ca_cert()).expect("ca");
    config.root_cert = Some(vec![
        rustls_pki_types::pem::PemObject::from_pem_slice(&ca)
            .map(|c: rustls_pki_types::CertificateDer| c.to_vec())
            .expect("ca der"),
    ]);
    config.auth_info.token = Some(token.to_owned().into());
    config.default_retry = false;
    Client::try_from(config).expect("client")
}

/// POST serviceaccounts/<account>/token in `ns` as `client`, bound to `pod` when given.
async fn token_request(
    client: &Client,
    ns: &str,
    account: &str,
    pod: Option<&str>,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3607}});
    if let Some(pod) = pod {
        request["spec"]["boundObjectRef"] = json!({"apiVersion": "v1", "kind": "Pod", "name": pod});
    }
    let answer: Value = api.create_subresource("token", account, &PostParams::default(), &request).await?;
    Ok(answer["status"]["token"].as_str().expect("a token").to_owned())
}

fn pod(name: &str, extra: Value) -> Value {
    let mut pod = json!({"metadata": {"name": name}, "spec": {
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}});
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    pod
}

/// The token volume admission gave `pod`, if any.
fn token_volume(pod: &Pod) -> Option<Value> {
    let spec = serde_json::to_value(pod.spec.as_ref()?).ok()?;
    spec["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-")))
        .cloned()
}

#[test]
fn a_new_namespace_gets_its_default_account_and_the_cluster_ca() {
    runtime().block_on(async {
        let server = common::start(1000).await;
        let client = server.client.clone();
        create(&Api::<Namespace>::all(client.clone()), json!({"metadata": {"name": "team"}}))
            .await
            .expect("ns");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
        eventually("the default ServiceAccount", || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await;
        let ca = std::fs::read_to_string(server.local.pki.ca_cert()).expect("ca");
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
        let cm = eventually("kube-root-ca.crt", || async {
            maps.get_opt("kube-root-ca.crt").await.ok().flatten()
        })
        .await;
        assert_eq!(cm.data.expect("data")["ca.crt"], ca);
        // Deleted: back again.
        accounts.delete("default", &DeleteParams::default()).await.expect("delete");
        maps.delete("kube-root-ca.crt", &DeleteParams::default()).await.expect("delete");
        eventually("the account recreated", || async { accounts.get_opt("default").await.ok().flatten() })
            .await;
        eventually("the CA republished", || async { maps.get_opt("kube-root-ca.crt").await.ok().flatten() })
            .await;
    });
}

#[test]
fn pods_get_the_token_volume_unless_they_opt_out_and_need_an_existing_account() {
    runtime().block_on(async {
        let server = common::start(1000).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        let web = create(&pods, pod("web", json!({}))).await.expect("pod");
        let spec = web.spec.as_ref().expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(spec.service_account.as_deref(), Some("default"), "the deprecated field mirrors it");
        let volume = token_volume(&web).expect("the token volume");
        let name = volume["name"].as_str().expect("name");
        let sources = &volume["projected"]["sources"];
        assert_eq!(volume["projected"]["defaultMode"], 420);
        assert_eq!(sources[0]["serviceAccountToken"], json!({"expirationSeconds": 3607, "path": "token"}));
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[1]["configMap"]["items"], json!([{"key": "ca.crt", "path": "ca.crt"}]));
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.namespace");
        let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
        for c in all {
            let m = c.volume_mounts.iter().flatten().find(|m| m.mount_path == MOUNT).expect("mounted");
            assert_eq!((m.name.as_str(), m.read_only), (name, Some(true)), "{}", c.name);
        }

        let opted_out =
            create(&pods, pod("quiet", json!({"automountServiceAccountToken": false}))).await.expect("pod");
        assert!(token_volume(&opted_out).is_none());
        assert!(opted_out.spec.expect("spec").containers[0].volume_mounts.is_none());

        let accounts: Api<ServiceAccount> = Api::namespaced(server.client.clone(), "default");
        create(&accounts, json!({"metadata": {"name": "shy"}, "automountServiceAccountToken": false}))
            .await
            .expect("sa");
        let shy = create(&pods, pod("shy", json!({"serviceAccountName": "shy"}))).await.expect("pod");
        assert!(token_volume(&shy).is_none(), "the account opts out");
        let insists =
            pod("insists", json!({"serviceAccountName": "shy", "automountServiceAccountToken": true}));
        assert!(token_volume(&create(&pods, insists).await.expect("pod")).is_some(), "the pod's word wins");

        let err = create(&pods, pod("lost", json!({"serviceAccountName": "ghost"})))
            .await
            .expect_err("no such account");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(
            message(&err).contains(
                "error looking up service account default/ghost: serviceaccount \"ghost\" not found"
            ),
            "{}",
            message(&err)
        );
        assert!(pods.get_opt("lost").await.expect("get").is_none(), "nothing stored");
    });
}

#[test]
fn nodes_mint_tokens_only_for_their_pods_and_bound_tokens_die_with_their_pod() {
    runtime().block_on(async {
        let server = common::start(1000).await;
        let pods: Api<Pod> = Api::namespaced(server.client.clone(), "default");
        create(&pods, pod("on-n1", json!({"nodeName": "n1"}))).await.expect("pod");
        create(&pods, pod("on-n2", json!({"nodeName": "n2"}))).await.expect("pod");
        let accounts: Api<ServiceAccount> = Api::namespaced(server.client.clone(), "default");
        create(&accounts, json!({"metadata": {"name": "robot"}})).await.expect("sa");
        let n1 = client_as(&server, "system:node:n1", &["system:nodes"]).await;

        let err = token_request(&n1, "default", "default", Some("on-n2")).await.expect_err("n2's pod");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(message(&err).contains("bound to a pod scheduled on a different node"), "{}", message(&err));
        let err = token_request(&n1, "default", "default", None).await.expect_err("unbound");
        assert_eq!(code(&err), Some(403), "{err}");
        let err = token_request(&n1, "default", "robot", None).await.expect_err("no pod of n1 runs as robot");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(message(&err).contains("no relationship found between node 'n1'"), "{}", message(&err));

        let token =
            token_request(&n1, "default", "default", Some("on-n1")).await.expect("its own pod's token");
        let as_pod = Api::<Pod>::namespaced(client_with_token(&server, &token), "default");
        let err = as_pod.list(&ListParams::default()).await.expect_err("authenticated, not authorized");
        assert_eq!(code(&err), Some(403), "{err}");
        assert!(
            message(&err).contains("User \"system:serviceaccount:default:default\""),
            "{}",
            message(&err)
        );
        // The node may also read the CA its pods project.
        Api::<ConfigMap>::namespaced(n1.clone(), "default")
            .get_opt("kube-root-ca.crt")
            .await
            .expect("the node may read kube-root-ca.crt");

        pods.delete("on-n1", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .expect("delete");
        eventually("the pod gone", || async {
            pods.get_opt("on-n1").await.expect("get").is_none().then_some(())
        })
        .await;
        let err = as_pod.list(&ListParams::default()).await.expect_err("its pod is gone");
        assert_eq!(code(&err), Some(401), "{err}");
    });
}
