//! `skiff-control backup` and `skiff-control restore`.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use skiff_control::{backup, pki, store::embedded::EmbeddedStore};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (0600: it holds the cluster's Secrets).
    pub file: PathBuf,
    /// A cluster admin's kubeconfig for the running API server (embedded store).
    #[arg(long, default_value = "/etc/skiff/admin.conf")]
    pub kubeconfig: PathBuf,
    /// Back up the etcd at these client URLs instead: an etcd snapshot.
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup made by `skiff-control backup`.
    pub file: PathBuf,
    /// The data dir of the embedded store to restore into (skiff-control stopped; its
    /// store.redb must not exist).
    #[arg(long, default_value = "/var/lib/skiff-control")]
    pub data_dir: PathBuf,
    /// For an etcd snapshot: the new etcd data directory (`etcdctl snapshot restore`; start etcd
    /// on it afterwards).
    #[arg(long)]
    pub etcd_data_dir: Option<PathBuf>,
    /// More `etcdctl snapshot restore` options for an etcd snapshot (`--name`,
    /// `--initial-cluster`, `--initial-advertise-peer-urls`), after `--`.
    #[arg(last = true)]
    pub etcdctl_args: Vec<String>,
}

pub fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (bytes, what) = if args.etcd_servers.is_empty() {
        rt.block_on(from_api_server(&args.kubeconfig))?
    } else {
        rt.block_on(from_etcd(&args.etcd_servers))?
    };
    pki::files::write_secret(&args.file, &bytes)
        .with_context(|| format!("writing {}", args.file.display()))?;
    println!("backed up {what} to {}", args.file.display());
    Ok(())
}

async fn from_api_server(kubeconfig: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let raw = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(raw, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let request = axum::http::Request::get(backup::PATH).body(Vec::new())?;
    let text = client.request_text(request).await.context("asking the API server for its snapshot")?;
    let (revision, objects) = backup::read(text.as_bytes()).context("the API server's snapshot")?;
    Ok((text.into_bytes(), format!("{} objects at revision {revision}", objects.len())))
}

async fn from_etcd(endpoints: &[String]) -> anyhow::Result<(Vec<u8>, String)> {
    let client = etcd_client::Client::connect(endpoints, None).await.context("connecting to etcd")?;
    let mut stream = client.maintenance_client().snapshot().await.context("asking etcd for a snapshot")?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.context("receiving etcd's snapshot")? {
        bytes.extend_from_slice(chunk.blob());
    }
    if bytes.is_empty() {
        bail!("etcd sent an empty snapshot");
    }
    let what = format!("an etcd snapshot of {} bytes", bytes.len());
    Ok((bytes, what))
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(&args.file)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", args.file.display()))?;
    if backup::is_snapshot(&head[..n]) {
        let file = std::fs::File::open(&args.file)?;
        let (revision, objects) = backup::read(std::io::BufReader::new(file))?;
        std::fs::create_dir_all(&args.data_dir)?;
        let path = args.data_dir.join("store.redb");
        if path.exists() {
            bail!("{} exists: stop skiff-control and move it aside first", path.display());
        }
        let bumped = revision + backup::RESTORE_BUMP;
        EmbeddedStore::restore(&path, bumped, &objects).context("writing the restored store")?;
        println!(
            "restored {} objects of revision {revision} into {} (the store goes on from {bumped})",
            objects.len(),
            path.display()
        );
        return Ok(());
    }
    let Some(data_dir) = &args.etcd_data_dir else {
        bail!("{} is not a skiff snapshot; for an etcd snapshot give --etcd-data-dir", args.file.display());
    };
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&args.file)
        .arg(format!("--data-dir={}", data_dir.display()))
        .args(&args.etcdctl_args)
        .output()
        .context("running etcdctl (Debian: apt install etcd-client)")?;
    std::io::stderr().write_all(&out.stderr)?;
    if !out.status.success() {
        bail!("etcdctl snapshot restore failed");
    }
    println!("restored the etcd snapshot into {} (start etcd on it)", data_dir.display());
    Ok(())
}
