//! `skiff-agent datapath`: the counter programs on chosen interfaces, counters printed at exit.

use std::path::PathBuf;

use skiff_agent::datapath::{self, Datapath, DatapathConfig, LogLevel, TcDirection};

use super::wait_for_shutdown;

#[derive(Debug, clap::Args)]
pub struct DatapathArgs {
    /// Attach the XDP program to this interface (repeatable).
    #[arg(long = "xdp", value_name = "IFACE")]
    pub xdp: Vec<String>,
    /// Attach the TC ingress program to this interface (repeatable).
    #[arg(long = "tc-ingress", value_name = "IFACE")]
    pub tc_ingress: Vec<String>,
    /// Attach the TC egress program to this interface (repeatable).
    #[arg(long = "tc-egress", value_name = "IFACE")]
    pub tc_egress: Vec<String>,
    /// bpffs directory for pinned maps.
    #[arg(long, default_value = datapath::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Log level inside the eBPF programs.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub datapath_log_level: LogLevel,
}

pub async fn run(args: DatapathArgs) -> anyhow::Result<()> {
    if args.xdp.is_empty() && args.tc_ingress.is_empty() && args.tc_egress.is_empty() {
        anyhow::bail!("nothing to attach: give --xdp, --tc-ingress or --tc-egress");
    }
    // Unknown interfaces are refused before anything is loaded or pinned.
    super::require_interfaces(args.xdp.iter().chain(&args.tc_ingress).chain(&args.tc_egress))?;
    let config =
        DatapathConfig { pin_dir: args.pin_dir, log_level: args.datapath_log_level, ..Default::default() };
    let mut dp = Datapath::load(&config)?;
    let logs = dp.take_logs(log::logger())?;
    let log_task = tokio::spawn(datapath::logs::forward(logs));

    // On failure, dropping `dp` detaches whatever did get attached.
    attach_all(&mut dp, &args.xdp, &args.tc_ingress, &args.tc_egress)?;
    let start = dp.counters()?;
    // Handlers first: a SIGTERM sent right after the readiness line must reach them.
    let shutdown = wait_for_shutdown()?;
    let summary: Vec<String> = dp.attached().iter().map(|(iface, hook)| format!("{hook}={iface}")).collect();
    // The line scripts wait for: everything is attached and counting.
    println!("attached {}", summary.join(" "));

    shutdown.await;

    let counters = dp.counters()?.since(&start);
    dp.detach_all()?;
    log_task.abort();
    print!("{counters}");
    Ok(())
}

fn attach_all(dp: &mut Datapath, xdp: &[String], tc_in: &[String], tc_out: &[String]) -> anyhow::Result<()> {
    for iface in xdp {
        dp.attach_xdp(iface)?;
    }
    for iface in tc_in {
        dp.attach_tc(iface, TcDirection::Ingress)?;
    }
    for iface in tc_out {
        dp.attach_tc(iface, TcDirection::Egress)?;
    }
    Ok(())
}
