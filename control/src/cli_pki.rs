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
