//! `skiff-agent run`: the node agent — datapath, service proxy, node registration and heartbeat,
//! routes to other nodes' pods, and the pods bound to this node — until SIGTERM. Pods keep
//! running when the agent stops; the next one adopts them.

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use skiff_agent::{
    datapath::{self, DatapathConfig},
    kubelet::{
        self,
        cni::Cni,
        node::{NodeAgent, NodeConfig},
        pods::{self, Ctx, PodConfig},
    },
    proxy::{
        ProxyContext, ServiceProxy,
        health::HealthChecks,
        mode::{self, ModeArgs, Proxy},
        watch,
    },
    runtime::{DEFAULT_NAMESPACE, DEFAULT_SOCKET, Runtime, busybox},
    status::Status,
};

use skiff_common::lb::LbConfig;

use super::wait_for_shutdown;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    /// With --bootstrap-kubeconfig, where the node's own kubeconfig is written once it has joined.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Join with a bootstrap token: when --kubeconfig does not exist yet, make a key, have the
    /// control plane certify system:node:<name> (a CertificateSigningRequest) and write
    /// --kubeconfig with the certificate (kubelet's TLS bootstrapping).
    #[arg(long, requires = "kubeconfig")]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's address, as other nodes and the control plane reach it.
    #[arg(long)]
    pub node_ip: Ipv4Addr,
    /// This node's pod CIDR (default: the one the control plane assigns).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// containerd's socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub containerd: PathBuf,
    /// containerd namespace for this node's pods.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub containerd_namespace: String,
    /// Pod data (logs, volumes).
    #[arg(long, default_value = "/var/lib/skiff")]
    pub root_dir: PathBuf,
    /// Where the CNI network configuration list is.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The IPAM data directory in the CNI configuration the agent writes (default: the plugin's,
    /// /var/lib/cni/networks). Agents sharing one host need one each.
    #[arg(long)]
    pub cni_ipam_dir: Option<PathBuf>,
    /// Where CNI plugins are (repeatable).
    #[arg(long = "cni-bin-dir", default_values = ["/opt/cni/bin", "/usr/lib/cni"])]
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The node's network namespace, when the agent runs outside it (CNI and probes run inside).
    #[arg(long)]
    pub node_netns: Option<PathBuf>,
    /// bpffs directory of the datapath's pins.
    #[arg(long, default_value = datapath::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The image of each pod's sandbox container.
    #[arg(long, default_value = busybox::IMAGE)]
    pub sandbox_image: String,
    /// A registry reachable over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// cgroup parent of the pods.
    #[arg(long, default_value = "/skiff")]
    pub cgroup_root: String,
    /// Port of the agent's HTTPS endpoint (on --node-ip): container logs, which the API server
    /// proxies `kubectl logs` to, and metrics; clients need a certificate from the cluster CA
    /// and the API server's permission (nodes/proxy, nodes/metrics).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// The endpoint's serving certificate (PEM, with --tls-private-key-file). Without it the
    /// agent asks the control plane for one (signer kubernetes.io/kubelet-serving, SANs the node
    /// name and --node-ip) and keeps it in --root-dir/pki.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA certificates (PEM) whose client certificates the endpoint accepts (default: the CA the
    /// kubeconfig trusts for the API server).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Directory of static pod manifests, mirrored to the API and run here.
    #[arg(long, default_value = "/etc/kubernetes/manifests")]
    pub pod_manifest_path: PathBuf,
    /// Write the CNI configuration list for this node's pod CIDR into --cni-conf-dir.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub write_cni_config: bool,
    /// Pod interface MTU (in the CNI configuration the agent writes).
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
    /// Seconds between heartbeats (lease renewal and node status).
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    #[command(flatten)]
    pub uplink: super::UplinkArgs,
    #[command(flatten)]
    pub mode: ModeArgs,
    #[command(flatten)]
    pub status: super::StatusArgs,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let node_name = super::node_name(args.node_name)?;
    if let (Some(bootstrap), Some(kubeconfig)) = (&args.bootstrap_kubeconfig, &args.kubeconfig)
        && !kubeconfig.exists()
    {
        kubelet::join::join(bootstrap, kubeconfig, &node_name)
            .await
            .with_context(|| format!("joining the cluster with {}", bootstrap.display()))?;
        tracing::info!(kubeconfig = %kubeconfig.display(), "joined: the node's certificate is signed");
    }
    let kube_config = super::service_proxy::config(args.kubeconfig.as_deref()).await?;
    let client_ca = match &args.client_ca_file {
        Some(path) => skiff_tls::pem_certs(
            &std::fs::read(path).with_context(|| format!("reading --client-ca-file {}", path.display()))?,
        )
        .with_context(|| format!("--client-ca-file {}", path.display()))?,
        None => kube_config.root_cert.iter().flatten().map(|der| der.clone().into()).collect(),
    };
    anyhow::ensure!(
        !client_ca.is_empty(),
        "no CA to verify the agent endpoint's clients with: the kubeconfig names none; pass --client-ca-file"
    );
    let client = kube::Client::try_from(kube_config).context("building the API client")?;
    let runtime = Runtime::connect(&args.containerd, &args.containerd_namespace).await?;
    let mut config = DatapathConfig { pin_dir: args.pin_dir.clone(), ..DatapathConfig::default() };
    // The socket-level load balancer serves the node namespace's own sockets.
    let netns_cookie = kubelet::netns::on_thread(args.node_netns.as_deref(), datapath::socklb::netns_cookie)
        .context("entering the node namespace")?
        .context("the node namespace's cookie (SO_NETNS_COOKIE)")?;
    config.lb.config = LbConfig {
        netns_cookie,
        node_addr_be: u32::from_ne_bytes(args.node_ip.octets()),
        snat_port_min: args.uplink.snat_ports.0,
        snat_port_max: args.uplink.snat_ports.1,
        ..LbConfig::DEFAULT
    };
    let mut proxy = mode::prepare(&args.mode, &config, args.node_netns.as_deref(), vec![args.node_ip])?;
    // The uplink program (eBPF mode only; the iptables mode does NodePorts in the kernel's nat table).
    let uplink_index = match &mut proxy {
        Proxy::Ebpf(dp) => {
            let (uplink, index) =
                kubelet::netns::on_thread(args.node_netns.as_deref(), || -> anyhow::Result<(String, u32)> {
                    let uplink = args.uplink.interface(args.node_ip)?;
                    let index = nix::net::if_::if_nametoindex(uplink.as_str())
                        .map_err(|_| anyhow::anyhow!("no interface named {uplink:?}"))?;
                    dp.attach_uplink(&uplink)?;
                    Ok((uplink, index))
                })
                .context("entering the node namespace")??;
            let cgroup = datapath::socklb::root_cgroup().context("no cgroup v2 hierarchy is mounted")?;
            dp.attach_socket_lb(&cgroup)?;
            dp.end_udp_sockets_in(args.node_netns.clone());
            tracing::info!(%uplink, "uplink program and socket-level load balancer attached");
            Some(index)
        }
        Proxy::Iptables(_) => None,
    };

    let mut node = NodeConfig::new(&node_name, args.node_ip);
    node.pod_cidr = args.pod_cidr.clone();
    node.data_dir = args.root_dir.clone();
    node.heartbeat = Duration::from_secs(args.heartbeat_seconds.max(1));
    node.runtime_version = "containerd://1.6".into();
    node.kubelet_port = args.kubelet_port;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;
    let node_agent = NodeAgent::new(client.clone(), node);
    let registered = node_agent.register(true).await.context("registering the node")?;
    // The network: this node's pod CIDR (given, or assigned by the control plane) in the conflist.
    if args.write_cni_config {
        let cidr = match registered.spec.as_ref().and_then(|s| s.pod_cidr.clone()) {
            Some(cidr) => cidr,
            None => wait_for_pod_cidr(&client, &node_name).await?,
        };
        let subnet = skiff_cni::spec::config::Cidr::parse(&cidr)
            .ok_or_else(|| anyhow::anyhow!("the node's pod CIDR {cidr:?} is not an IPv4 network"))?;
        let install = skiff_cni::install::Install {
            bin_dir: PathBuf::new(),
            conf_dir: args.cni_conf_dir.clone(),
            subnet,
            mtu: args.mtu,
            pin_dir: args.pin_dir.clone(),
            ipam_data_dir: args.cni_ipam_dir.clone(),
            load_balancer: proxy.is_ebpf(),
        };
        install.write_conflist().map_err(|e| anyhow::anyhow!(e)).context("writing the CNI configuration")?;
    }
    let mut cni = Cni::load(&args.cni_conf_dir, args.cni_bin_dirs.clone(), args.root_dir.join("cni"))?;
    if let Some(ns) = &args.node_netns {
        cni = cni.in_netns(ns.clone());
    }

    let mut config = PodConfig::new(&node_name, args.node_ip);
    config.root_dir = args.root_dir.clone();
    config.sandbox_image = args.sandbox_image.clone();
    config.cgroup_root = args.cgroup_root.clone();
    config.node_netns = args.node_netns.clone();
    config.pull.insecure_registries = args.insecure_registries.clone();
    config.static_dir = Some(args.pod_manifest_path.clone());
    let events = kubelet::events::Recorder::new(client.clone(), &node_name);
    let ctx = Arc::new(Ctx { client: client.clone(), events, runtime, cni, config });

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let netlink = route_handle(args.node_netns.clone())?;
    let endpoint = tokio::net::TcpListener::bind((args.node_ip, args.kubelet_port))
        .await
        .with_context(|| format!("listening on {}:{}", args.node_ip, args.kubelet_port))?;
    let status = Status::new(
        &node_name,
        if proxy.is_ebpf() { "ebpf" } else { "iptables" },
        proxy.is_ebpf().then(|| args.pin_dir.clone()),
        Some(client.clone()),
    );
    status.set_node_netns(args.node_netns.clone());
    let endpoint = serve_endpoint(
        EndpointSetup {
            client: client.clone(),
            node: node_name.clone(),
            sans: vec![node_name.clone(), args.node_ip.to_string()],
            given: args.tls_cert_file.clone().zip(args.tls_private_key_file.clone()),
            keep_dir: args.root_dir.join("pki"),
            client_ca,
        },
        kubelet::server::router(
            ctx.clone(),
            Some(status.clone()),
            Arc::new(kubelet::server::authz::Authorizer::new(client.clone(), &node_name)),
        ),
        endpoint,
        until_stopped(),
    );
    let servers = args.status.serve(status.clone(), &args.pin_dir, until_stopped.clone()).await?;
    let mut tasks = vec![
        tokio::spawn({
            let agent = node_agent.clone();
            let stop = until_stopped();
            async move { agent.run(|| true, stop).await }
        }),
        tokio::spawn(kubelet::run_routes(
            client.clone(),
            netlink,
            node_name.clone(),
            uplink_index,
            until_stopped(),
        )),
        tokio::spawn(endpoint),
        tokio::spawn(kubelet::static_pods::run(
            client.clone(),
            args.pod_manifest_path.clone(),
            node_name.clone(),
            Duration::from_secs(5),
            until_stopped(),
        )),
        tokio::spawn(pods::run(ctx, until_stopped())),
    ];
    tasks.extend(servers);
    tracing::info!(node = %node_name, "skiff-agent running");
    let shutdown = wait_for_shutdown()?;
    let proxy_ctx = ProxyContext { node_name, proxy_name: None, nodeport_addresses: vec![args.node_ip] };
    // Health-check node ports on every address, as kube-proxy serves them.
    let health = HealthChecks::new(Ipv4Addr::UNSPECIFIED);
    let mut feeder =
        watch::Feeder::new(ServiceProxy::new(proxy_ctx, proxy.dataplane()).with_health_checks(health))
            .with_status(status);
    tokio::select! {
        result = watch::run(client, &mut feeder) => result?,
        () = shutdown => tracing::info!("shutting down; pods keep running"),
    }
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// What the agent's HTTPS endpoint is served with.
struct EndpointSetup {
    client: kube::Client,
    node: String,
    sans: Vec<String>,
    /// --tls-cert-file and --tls-private-key-file.
    given: Option<(PathBuf, PathBuf)>,
    /// Where an obtained serving certificate is kept.
    keep_dir: PathBuf,
    /// The CAs whose clients are accepted.
    client_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Serves the endpoint once it has a serving certificate (given, or signed through the API: an
/// administrator may have to approve it, so the rest of the agent does not wait) until `stop`.
async fn serve_endpoint(
    setup: EndpointSetup,
    app: axum::Router,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    use kubelet::server::{identity::Identity, serve, tls_config};
    let identity = async {
        let identity = match &setup.given {
            Some((cert, key)) => Identity::from_files(cert, key)?,
            None => {
                Identity::obtain(
                    setup.client,
                    &setup.node,
                    &setup.sans,
                    &setup.keep_dir,
                    Duration::from_secs(3600),
                )
                .await?
            }
        };
        tls_config(&identity, &setup.client_ca)
    };
    let mut stop = Box::pin(stop);
    let tls = tokio::select! {
        tls = identity => tls,
        () = &mut stop => return,
    };
    match tls {
        Ok(tls) => {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving the agent endpoint over HTTPS");
            serve(listener, tls, app, stop).await;
        }
        Err(e) => tracing::error!("the agent endpoint (logs, metrics) is not served: {e:#}"),
    }
}

/// Waits until the control plane assigns the node a pod CIDR.
async fn wait_for_pod_cidr(client: &kube::Client, node: &str) -> anyhow::Result<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let mut logged = false;
    loop {
        if let Some(cidr) = nodes.get(node).await?.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
        if !logged {
            tracing::info!(node, "waiting for the control plane to assign a pod CIDR (or give --pod-cidr)");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A netlink handle in the node's namespace (this process's when `netns` is `None`).
fn route_handle(netns: Option<PathBuf>) -> anyhow::Result<rtnetlink::Handle> {
    let rt = tokio::runtime::Handle::current();
    let made = kubelet::netns::on_thread(netns.as_deref(), move || {
        let _in = rt.enter();
        rtnetlink::new_connection()
    })
    .context("entering the node namespace")?
    .context("opening a netlink socket")?;
    let (connection, handle, _) = made;
    tokio::spawn(connection);
    Ok(handle)
}
