//! `skiff svc`, `ct`, `trace` and `explain`: argument parsing and printing around
//! `skiff_agent::inspect`.

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};
use skiff_agent::{
    inspect::{
        self, Format,
        ct::CtFilter,
        explain::{Question, Source},
        svc::{AgentState, DesiredFrontend},
        trace::{Clock, Filter, Names, Session},
    },
    proxy::Protocol,
};

use super::ReadArgs;

fn fail(e: anyhow::Error) -> String {
    format!("{e:#}")
}

fn print(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("writing: {e}"))
}

#[derive(Debug, Subcommand)]
pub enum SvcCommand {
    /// Every frontend with its backends (active / terminating) and their packet and new-flow
    /// counters, from the live maps; Service names from the agent when it answers.
    List {
        #[command(flatten)]
        read: ReadArgs,
        /// Only this Service's frontends (`namespace/name`).
        #[arg(long)]
        svc: Option<String>,
    },
    /// Compares the live maps with what the agent computed from the API; exits 1 on drift.
    Diff {
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// `namespace/name` → the Service's frontends, from the agent.
fn frontends_of<'a>(state: &'a AgentState, svc: &str) -> Result<Vec<&'a DesiredFrontend>, String> {
    if !svc.contains('/') {
        return Err(format!("--svc {svc:?}: give namespace/name"));
    }
    let found: Vec<&DesiredFrontend> = state.frontends.iter().filter(|f| f.service == svc).collect();
    if found.is_empty() {
        return Err(format!("the agent programs no frontend for Service {svc}"));
    }
    Ok(found)
}

/// The live maps; when there are none because the agent runs in iptables mode, says so.
fn live_maps(read: &ReadArgs) -> Result<inspect::svc::LiveMaps, String> {
    inspect::svc::LiveMaps::open(&read.pin_dir).map_err(|e| match inspect::agent::state(&read.socket()) {
        Ok(state) if state.mode == "iptables" => {
            "the agent runs in iptables mode: its Services are in `iptables-save -t nat` (KUBE-SVC-*)"
                .to_owned()
        }
        _ => fail(e),
    })
}

pub fn svc(cmd: &SvcCommand) -> Result<(), String> {
    match cmd {
        SvcCommand::List { read, svc } => {
            let live = live_maps(read)?;
            // Without the agent the maps still tell most of the story; say what is missing.
            let state = match inspect::agent::state(&read.socket()) {
                Ok(state) => Some(state),
                Err(e) if svc.is_none() => {
                    eprintln!("skiff: no Service names or terminating backends: {e:#}");
                    None
                }
                Err(e) => return Err(fail(e)),
            };
            let mut rows = inspect::svc::list(&live, state.as_ref());
            if let Some(name) = svc {
                let wanted: BTreeSet<&str> =
                    frontends_of(state.as_ref().expect("state checked above"), name)?
                        .iter()
                        .map(|f| f.frontend.as_str())
                        .collect();
                rows.retain(|r| wanted.contains(r.frontend.as_str()));
            }
            print(&inspect::output::render(read.output, &rows, inspect::svc::list_table).map_err(fail)?)
        }
        SvcCommand::Diff { read } => {
            let state = inspect::agent::state(&read.socket()).map_err(fail)?;
            if !state.ready {
                return Err(
                    "the agent has not applied its first listing yet; try again in a moment".to_owned()
                );
            }
            let live = live_maps(read)?;
            let drift = inspect::svc::diff(&live, &state);
            print(&inspect::output::render(read.output, &drift, inspect::svc::diff_table).map_err(fail)?)?;
            if !drift.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct CtArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Flows of this Service's frontends (`namespace/name`).
    #[arg(long)]
    svc: Option<String>,
    /// Flows of this pod, by its IP (as client or as backend).
    #[arg(long)]
    pod: Option<Ipv4Addr>,
    /// Flows with this address anywhere (client, frontend, backend).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
}

impl CtArgs {
    fn filter(&self) -> Result<CtFilter, String> {
        let frontends = match &self.svc {
            None => None,
            Some(svc) => {
                let state = inspect::agent::state(&self.read.socket()).map_err(fail)?;
                Some(frontends_of(&state, svc)?.iter().map(|f| f.frontend.clone()).collect())
            }
        };
        Ok(CtFilter { frontends, pod: self.pod, ip: self.ip })
    }

    fn filtered(&self) -> bool {
        self.svc.is_some() || self.pod.is_some() || self.ip.is_some()
    }
}

pub fn ct_list(args: &CtArgs) -> Result<(), String> {
    let rows = inspect::ct::list(&args.read.pin_dir, &args.filter()?).map_err(fail)?;
    print(&inspect::output::render(args.read.output, &rows, inspect::ct::list_table).map_err(fail)?)
}

pub fn ct_flush(args: &CtArgs, all: bool) -> Result<(), String> {
    if !args.filtered() && !all {
        return Err(
            "ct flush without --svc, --pod or --ip flushes every flow: add --all to mean it".to_owned()
        );
    }
    let done = inspect::ct::flush(&args.read.pin_dir, &args.filter()?).map_err(fail)?;
    let text = format!("flushed {} conntrack and {} reverse-NAT entries\n", done.conntrack, done.reverse_nat);
    print(&inspect::output::render(args.read.output, &[done], |_| text.clone()).map_err(fail)?)
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Source address or CIDR (matches before or after translation).
    #[arg(long, value_parser = cidr)]
    src: Option<(Ipv4Addr, u8)>,
    /// Destination address or CIDR (a ClusterIP or a pod IP: before or after translation).
    #[arg(long, value_parser = cidr)]
    dst: Option<(Ipv4Addr, u8)>,
    /// Only this Service's frontends (`namespace/name`), both directions.
    #[arg(long)]
    svc: Option<String>,
    /// A port at either end, before or after translation.
    #[arg(long)]
    port: Option<u16>,
    /// `tcp` or `udp`.
    #[arg(long, value_parser = protocol)]
    proto: Option<Protocol>,
    /// Only drops and rejects, with their reason.
    #[arg(long)]
    drops_only: bool,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
}

fn cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{s:?} is not an IPv4 address or CIDR"))?;
    let len: u8 =
        len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{s:?}: prefix length 0-32"))?;
    Ok((addr, len))
}

fn protocol(s: &str) -> Result<Protocol, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("{s:?}: tcp or udp")),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end the session cleanly (tracing switched off) instead of killing us.
fn catch_signals() -> Result<(), String> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGPIPE] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }.map_err(|e| format!("installing a {sig} handler: {e}"))?;
    }
    Ok(())
}

/// Parses a frontend name `VIP:port/PROTO`.
fn parse_frontend(name: &str) -> Option<(Ipv4Addr, u16, u8)> {
    let (addr, rest) = name.split_once(':')?;
    let (port, proto) = rest.split_once('/')?;
    let proto = protocol(proto).ok()?;
    Some((addr.parse().ok()?, port.parse().ok()?, proto.number()))
}

pub fn trace(args: &TraceArgs) -> Result<(), String> {
    let state = inspect::agent::state(&args.read.socket());
    if let (Err(e), None) = (&state, &args.svc) {
        eprintln!("skiff: events will carry no Service names: {e:#}");
    }
    let frontends = match &args.svc {
        None => Vec::new(),
        Some(svc) => {
            let state = state.as_ref().map_err(|e| format!("resolving --svc: {e:#}"))?;
            frontends_of(state, svc)?.iter().filter_map(|f| parse_frontend(&f.frontend)).collect()
        }
    };
    let filter = Filter {
        src: args.src,
        dst: args.dst,
        port: args.port,
        proto: args.proto.map(Protocol::number),
        frontends,
        drops_only: args.drops_only,
    };
    let mut names = Names::read(&args.read.pin_dir, state.as_ref().ok()).map_err(fail)?;
    catch_signals()?;
    let mut session = Session::start(&args.read.pin_dir, &filter).map_err(fail)?;
    eprintln!("skiff: tracing (Ctrl-C to stop)");
    let clock = Clock::now();
    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut seen = 0u64;
    while !INTERRUPTED.load(Ordering::SeqCst)
        && args.count.is_none_or(|n| seen < n)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let Some(event) = session.next(Duration::from_millis(200)).map_err(fail)? else { continue };
        if (event.svc_id != u32::MAX && !names.rows.contains_key(&event.svc_id))
            || (event.backend_id != 0 && !names.backends.contains_key(&event.backend_id))
        {
            // Programmed after we started: read the names again.
            names = Names::read(&args.read.pin_dir, state.as_ref().ok()).map_err(fail)?;
        }
        let line = inspect::trace::describe(&event, &mut names, &clock);
        let text = match args.read.output {
            Format::Table => format!("{}\n", inspect::trace::line_text(&line)),
            Format::Json => format!("{}\n", serde_json::to_string(&line).map_err(|e| e.to_string())?),
            Format::Yaml => format!("---\n{}", serde_yaml::to_string(&line).map_err(|e| e.to_string())?),
        };
        if print(&text).is_err() {
            break;
        }
        seen += 1;
    }
    drop(session);
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// A pod's or client's IPv4 address, or `host` (a process of the node).
    source: String,
    /// `IP:PORT[/tcp|udp]`, or a Service `namespace/name[:PORT]` (its ClusterIP frontends).
    destination: String,
    /// The client's source port (it decides the Maglev slot of a new flow).
    #[arg(long, default_value_t = 40000)]
    sport: u16,
    /// Network namespace (`ip netns` name) the node's routes live in (default: this one).
    #[arg(long)]
    netns: Option<String>,
}

/// The frontends a destination names: an address, or a Service's ClusterIP frontends.
fn destinations(
    args: &ExplainArgs,
    state: Option<&AgentState>,
) -> Result<Vec<(Ipv4Addr, u16, Protocol)>, String> {
    let dst = &args.destination;
    if let Some((addr, rest)) = dst.split_once(':')
        && let Ok(addr) = addr.parse::<Ipv4Addr>()
    {
        let (port, proto) = rest.split_once('/').unwrap_or((rest, "tcp"));
        let port: u16 = port.parse().map_err(|_| format!("{dst:?}: {port:?} is not a port"))?;
        return Ok(vec![(addr, port, protocol(proto)?)]);
    }
    if !dst.contains('/') {
        return Err(format!("{dst:?} is neither IP:PORT[/PROTO] nor namespace/name[:PORT]"));
    }
    let (svc, port) = match dst.rsplit_once(':') {
        Some((svc, port)) => (svc, Some(port)),
        None => (dst.as_str(), None),
    };
    let state = state.ok_or("naming a Service needs the agent (its status socket did not answer)")?;
    let found: Vec<_> = frontends_of(state, svc)?
        .into_iter()
        .filter(|f| !f.external)
        .filter(|f| port.is_none_or(|p| f.port_name == p || f.frontend.split(['/', ':']).nth(1) == Some(p)))
        .filter_map(|f| parse_frontend(&f.frontend))
        .filter_map(|(a, p, n)| Some((a, p, Protocol::from_number(n)?)))
        .collect();
    if found.is_empty() {
        return Err(format!(
            "Service {svc} has no ClusterIP frontend{}",
            port.map(|p| format!(" on {p}")).unwrap_or_default()
        ));
    }
    Ok(found)
}

pub fn explain(args: &ExplainArgs) -> Result<(), String> {
    let state = inspect::agent::state(&args.read.socket()).ok();
    let source = if args.source == "host" {
        Source::Host(Ipv4Addr::new(127, 0, 0, 1))
    } else {
        Source::Addr(
            args.source.parse().map_err(|_| format!("{:?} is not an IPv4 address or `host`", args.source))?,
        )
    };
    let mut out = Vec::new();
    for (dst, port, proto) in destinations(args, state.as_ref())? {
        let q = Question { source, dst, port, proto, sport: args.sport, netns: args.netns.clone() };
        out.push(inspect::explain::explain(&args.read.pin_dir, &q, state.as_ref()).map_err(fail)?);
    }
    print(&inspect::output::render(args.read.output, &out, inspect::explain::as_table).map_err(fail)?)
}
