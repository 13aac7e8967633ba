//! `skiff-control init` and `skiff-control certs …`: the PKI commands.

use std::path::PathBuf;

use skiff_control::pki::{self, InitConfig, Pki};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// PKI root: `pki/` for certificates and keys, kubeconfigs beside it.
    #[arg(long, default_value = pki::DEFAULT_ROOT)]
    pub pki_dir: PathBuf,
    /// The API server's address as clients reach it (repeatable; the first goes into the
    /// kubeconfigs' server URL).
    #[arg(long = "apiserver-advertise-address", default_value = "127.0.0.1")]
    pub advertise: Vec<std::net::IpAddr>,
    /// The API server's port.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// More names or addresses for the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub apiserver_cert_extra_sans: Vec<String>,
    /// ClusterIP range (its first address, the `kubernetes` Service's, joins the SANs).
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// A node to issue a client certificate and kubeconfig for (repeatable).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Lifetime of leaf certificates, days.
    #[arg(long, default_value_t = 365)]
    pub cert_validity_days: u32,
    /// The cluster's name in kubeconfigs.
    #[arg(long, default_value = "skiff")]
    pub cluster_name: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Every certificate's expiry and residual time, the CA first.
    CheckExpiration {
        #[arg(long, default_value = pki::DEFAULT_ROOT)]
        pki_dir: PathBuf,
    },
    /// Reissue a certificate (`apiserver`, `admin.conf`, `nodes/<name>.conf`, …) or `all` for
    /// another validity period, keeping its key.
    Renew {
        which: String,
        #[arg(long, default_value = pki::DEFAULT_ROOT)]
        pki_dir: PathBuf,
    },
}

pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let first = args.advertise.first().copied().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let host = match first {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let mut sans: Vec<String> = args.advertise.iter().map(ToString::to_string).collect();
    sans.extend(args.apiserver_cert_extra_sans.iter().cloned());
    let config = InitConfig {
        cluster_name: args.cluster_name.clone(),
        server: format!("https://{host}:{}", args.secure_port),
        apiserver_sans: sans,
        service_cidr: args.service_cluster_ip_range.clone(),
        nodes: args.nodes.clone(),
        cert_days: args.cert_validity_days,
        ..InitConfig::default()
    };
    let pki = Pki::new(&args.pki_dir);
    for done in pki.init(&config)? {
        println!("{:<9} {:<34} {}", done.action, done.what, done.path.display());
    }
    println!(
        "\nkubectl --kubeconfig {} get nodes   # once `skiff-control serve --pki-dir {}` runs",
        pki.admin_kubeconfig().display(),
        args.pki_dir.display()
    );
    Ok(())
}

pub fn certs(cmd: &CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::CheckExpiration { pki_dir } => {
            print!("{}", pki::expiry_table(&Pki::new(pki_dir).check_expiration()?));
        }
        CertsCommand::Renew { which, pki_dir } => {
            for name in Pki::new(pki_dir).renew(which)? {
                println!("renewed {name}");
            }
            println!("restart skiff-control (and agents whose kubeconfig was renewed) to use them");
        }
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token a new node joins with (`skiff-agent run --bootstrap-kubeconfig`):
    /// a Secret in kube-system, created through the API as the admin of `--pki-dir`.
    Create {
        #[arg(long, default_value = pki::DEFAULT_ROOT)]
        pki_dir: PathBuf,
        /// Hours until the token expires.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
        /// Also write a kubeconfig holding the token and the cluster CA, for joining nodes.
        #[arg(long)]
        write_bootstrap_kubeconfig: Option<PathBuf>,
        /// The API server's URL (default: the one `init` was given).
        #[arg(long)]
        server: Option<String>,
    },
}

pub fn token(cmd: &TokenCommand) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let TokenCommand::Create { pki_dir, ttl_hours, write_bootstrap_kubeconfig, server } = cmd;
    let pki = Pki::new(pki_dir);
    let config = pki.config()?;
    let server = server.clone().unwrap_or(config.server.clone());
    let token = skiff_control::auth::bootstrap::generate();
    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(i64::from(*ttl_hours)))
        .context("expiration out of range")?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let secret = skiff_control::auth::bootstrap::secret_for(&token, &expires, "skiff-control token create")
        .context("a generated token has the wrong shape")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        let raw = kube::config::Kubeconfig::read_from(pki.admin_kubeconfig())?;
        let mut kube_config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await?;
        kube_config.cluster_url = server.parse().context("the server URL")?;
        let client = kube::Client::try_from(kube_config)?;
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, skiff_control::auth::bootstrap::NAMESPACE);
        secrets
            .create(&Default::default(), &serde_json::from_value(secret)?)
            .await
            .context("creating the bootstrap token's Secret")?;
        anyhow::Ok(())
    })?;
    if let Some(path) = write_bootstrap_kubeconfig {
        let ca = pki::files::read(&pki.ca_cert())?;
        let text =
            pki::kubeconfig::render_token(&config.cluster_name, &server, &ca, "kubelet-bootstrap", &token);
        pki::files::write_secret(path, text.as_bytes())?;
        eprintln!("bootstrap kubeconfig written to {} (valid until {expires})", path.display());
    }
    // The token itself goes to stdout (for scripts); it is a credential: keep it out of logs.
    println!("{token}");
    Ok(())
}
