//! The eBPF datapath as user space sees it: load the embedded object, attach its programs to
//! interfaces, read its maps, forward its logs.
//!
//! Interface names are resolved in the network namespace of the calling thread, so callers that
//! attach inside another namespace do so from a thread that has entered it.

pub mod bpffs;
pub mod cleanup;
mod counters;
mod error;
pub mod lb;
mod log_level;
pub mod logs;
pub mod object;
mod pinned;
pub mod socklb;

use std::path::PathBuf;

use crate::proxy::LbDataplane;
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{SchedClassifierLinkId, TcAttachOptions},
        xdp::XdpLinkId,
    },
};
use skiff_common::{
    Hook,
    lb::{self as lbdefs, LbConfig},
    names,
};

pub use counters::Counters;
pub use error::DatapathError;
pub use log_level::LogLevel;

/// Where the agent pins its maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = names::DEFAULT_PIN_DIR;

/// How to load the datapath.
#[derive(Debug, Clone)]
pub struct DatapathConfig {
    /// bpffs directory for pinned maps; created (and bpffs mounted) when missing.
    pub pin_dir: PathBuf,
    /// Which aya-log statements in the programs are live; `Off` makes logging cost one load+compare.
    pub log_level: LogLevel,
    /// Load-balancer settings and map capacities.
    pub lb: LbCapacity,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self { pin_dir: PathBuf::from(DEFAULT_PIN_DIR), log_level: LogLevel::Info, lb: LbCapacity::default() }
    }
}

/// Load-balancer tunables and map capacities; a pinned map of another size is recreated.
#[derive(Debug, Clone, Copy)]
pub struct LbCapacity {
    /// Settings patched into the programs (Maglev table size, hairpin address, CT lifetimes).
    pub config: LbConfig,
    /// Frontends (`VIP:port/proto`, plus one marker per ClusterIP).
    pub max_services: u32,
    pub max_backends: u32,
    /// Conntrack entries per direction.
    pub max_ct: u32,
    pub max_affinity: u32,
    pub max_frags: u32,
}

impl Default for LbCapacity {
    fn default() -> Self {
        Self {
            config: LbConfig::DEFAULT,
            max_services: lbdefs::DEFAULT_MAX_SERVICES,
            max_backends: lbdefs::DEFAULT_MAX_BACKENDS,
            max_ct: lbdefs::DEFAULT_MAX_CT,
            max_affinity: lbdefs::DEFAULT_MAX_AFFINITY,
            max_frags: lbdefs::DEFAULT_MAX_FRAGS,
        }
    }
}

/// Backend ids run from 1 to `max_backends` (0 is never used), so their counters need one more slot.
fn be_stats_entries(max_backends: u32) -> u32 {
    max_backends.saturating_add(1)
}

/// What a test run of a program returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The TC action (`TC_ACT_OK` 0, `TC_ACT_SHOT` 2, `TC_ACT_REDIRECT` 7).
    pub verdict: i32,
    /// Bytes of output packet.
    pub len: usize,
    /// Average time per run, as the kernel measured it.
    pub duration: std::time::Duration,
}

/// Traffic direction for a TC program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDirection {
    Ingress,
    Egress,
}

impl TcDirection {
    fn program(self) -> &'static str {
        match self {
            TcDirection::Ingress => names::PROG_TC_INGRESS,
            TcDirection::Egress => names::PROG_TC_EGRESS,
        }
    }

    fn hook(self) -> Hook {
        match self {
            TcDirection::Ingress => Hook::TcIngress,
            TcDirection::Egress => Hook::TcEgress,
        }
    }

    fn attach_type(self) -> TcAttachType {
        match self {
            TcDirection::Ingress => TcAttachType::Ingress,
            TcDirection::Egress => TcAttachType::Egress,
        }
    }
}

#[derive(Debug)]
enum LinkId {
    Xdp(XdpLinkId),
    Tc(TcDirection, SchedClassifierLinkId),
    /// A link pinned at this path (the load balancer on a veth, the uplink program), so it
    /// outlives the agent and the next agent swaps its program in atomically; with its hook's name.
    Pinned(&'static str, PathBuf),
}

/// One program attached to one interface.
#[derive(Debug)]
struct Attachment {
    iface: String,
    link: LinkId,
}

/// The loaded datapath. Dropping it detaches every program it attached.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// bpffs directory of pinned links (`<pin dir>/links`).
    links_dir: PathBuf,
    lb: LbDataplane<lb::LbMaps>,
}

impl Datapath {
    /// Loads every program and map into the kernel (the verifier runs here, so a bad program fails
    /// now rather than at attach time). Maps are pinned under `config.pin_dir` and reused if a
    /// previous agent left them there.
    pub fn load(config: &DatapathConfig) -> Result<Self, DatapathError> {
        let cap = &config.lb;
        if !lb::maglev::is_prime(cap.config.maglev_m) {
            return Err(DatapathError::Config("the Maglev table size must be prime"));
        }
        let maglev_entries = cap
            .max_services
            .checked_mul(cap.config.maglev_m)
            .ok_or(DatapathError::Config("max services × Maglev size overflows"))?;
        bpffs::ensure_dir(&config.pin_dir)?;
        // aya reuses a pinned map whatever its size; a map pinned by an agent with other
        // capacities would be silently wrong (a Maglev table of the wrong M), so refuse clearly.
        for (name, wanted) in [
            (names::MAP_SERVICES, cap.max_services),
            (names::MAP_BACKENDS, cap.max_backends),
            (names::MAP_MAGLEV, maglev_entries),
            (names::MAP_CT, cap.max_ct),
            (names::MAP_RNAT, cap.max_ct),
            (names::MAP_AFFINITY, cap.max_affinity),
            (names::MAP_FRAGS, cap.max_frags),
            (names::MAP_SVC_STATS, cap.max_services),
            (names::MAP_BE_STATS, be_stats_entries(cap.max_backends)),
        ] {
            let pin = config.pin_dir.join(name);
            if let Ok(info) = aya::maps::MapInfo::from_pin(&pin)
                && info.max_entries() != wanted
            {
                return Err(DatapathError::PinnedSize { path: pin, pinned: info.max_entries(), wanted });
            }
        }
        let level = config.log_level.as_u8();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_dir)
            .override_global(names::GLOBAL_LOG_LEVEL, &level, true)
            .override_global(names::GLOBAL_LB_CONFIG, &cap.config, true)
            .map_max_entries(names::MAP_SERVICES, cap.max_services)
            .map_max_entries(names::MAP_BACKENDS, cap.max_backends)
            .map_max_entries(names::MAP_MAGLEV, maglev_entries)
            .map_max_entries(names::MAP_CT, cap.max_ct)
            .map_max_entries(names::MAP_RNAT, cap.max_ct)
            .map_max_entries(names::MAP_AFFINITY, cap.max_affinity)
            .map_max_entries(names::MAP_FRAGS, cap.max_frags)
            .map_max_entries(names::MAP_SVC_STATS, cap.max_services)
            .map_max_entries(names::MAP_BE_STATS, be_stats_entries(cap.max_backends))
            .load(object::OBJECT)
            .map_err(|source| {
                if nix::unistd::geteuid().is_root() {
                    DatapathError::Load(source)
                } else {
                    DatapathError::NotPrivileged(source)
                }
            })?;

        for name in socklb::PROGRAMS {
            program_mut::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        for name in [names::PROG_XDP, names::PROG_UPLINK] {
            program_mut::<Xdp>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        for name in [names::PROG_TC_INGRESS, names::PROG_TC_EGRESS, names::PROG_LB] {
            program_mut::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        // Adopt what a previous agent left in the pinned maps: established flows keep their rows
        // and backend ids while the service proxy re-lists.
        let maps = lb::LbMaps::take(&mut ebpf, maglev_entries, cap.config.maglev_m, cap.max_backends)?;
        let lb = LbDataplane::adopt(maps);
        let links_dir = config.pin_dir.join(names::PIN_LINKS_DIR);
        bpffs::ensure_dir(&links_dir)?;
        // The CNI plugin attaches this program to each new pod veth, from its pin.
        let progs_dir = config.pin_dir.join(names::PIN_PROGS_DIR);
        bpffs::ensure_dir(&progs_dir)?;
        let prog_pin = progs_dir.join(names::PROG_LB);
        if prog_pin.exists() {
            std::fs::remove_file(&prog_pin)
                .map_err(|source| DatapathError::Bpffs { path: prog_pin.clone(), source })?;
        }
        program_mut::<SchedClassifier>(&mut ebpf, names::PROG_LB)?
            .pin(&prog_pin)
            .map_err(|source| DatapathError::Pin { path: prog_pin.clone(), source })?;
        Ok(Self { ebpf, attachments: Vec::new(), links_dir, lb })
    }

    /// Attaches the XDP program to `iface` (driver mode where the driver supports it, else generic).
    pub fn attach_xdp(&mut self, iface: &str) -> Result<(), DatapathError> {
        let prog = program_mut::<Xdp>(&mut self.ebpf, names::PROG_XDP)?;
        let id = prog.attach(iface, XdpMode::default()).map_err(|source| DatapathError::Attach {
            program: names::PROG_XDP,
            iface: iface.to_owned(),
            source,
        })?;
        self.attachments.push(Attachment { iface: iface.to_owned(), link: LinkId::Xdp(id) });
        Ok(())
    }

    /// Attaches the TC program for `direction` to `iface` as a tcx link. tcx (Linux ≥ 6.6) is
    /// required: links are per-program, replaceable atomically and go away with their owner, none
    /// of which the legacy clsact filters give.
    pub fn attach_tc(&mut self, iface: &str, direction: TcDirection) -> Result<(), DatapathError> {
        let name = direction.program();
        let prog = program_mut::<SchedClassifier>(&mut self.ebpf, name)?;
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        let id = prog
            .attach_with_options(iface, direction.attach_type(), options)
            .map_err(|source| DatapathError::Attach { program: name, iface: iface.to_owned(), source })?;
        self.attachments.push(Attachment { iface: iface.to_owned(), link: LinkId::Tc(direction, id) });
        Ok(())
    }

    /// Attaches the uplink program (NodePort, externalIPs, load-balancer addresses, and replies
    /// from other nodes' backends) to `iface`, the node's external interface, in XDP driver mode
    /// where the driver has it (the kernel falls back to generic XDP otherwise).
    ///
    /// Like the load balancer's links, the XDP link is pinned (`<pin dir>/links/uplink-<iface>`) and
    /// a restarted agent swaps its program into it atomically, so external flows carry on.
    ///
    /// The interface gets `accept_local=1`: a reply the program hands to the kernel can carry
    /// one of the node's own addresses as its source (a pod's flow to this node's NodePort whose
    /// backend is on another node), which the kernel would otherwise drop as a martian.
    pub fn attach_uplink(&mut self, iface: &str) -> Result<(), DatapathError> {
        let sysctl = std::path::PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/accept_local"));
        std::fs::write(&sysctl, "1").map_err(|source| DatapathError::Sysctl { path: sysctl, source })?;
        let pin = self.links_dir.join(format!("{}{iface}", names::LINK_UPLINK_PREFIX));
        let prog = program_mut::<Xdp>(&mut self.ebpf, names::PROG_UPLINK)?;
        pinned::attach(prog, names::PROG_UPLINK, iface, &pin)?;
        self.attachments
            .push(Attachment { iface: iface.to_owned(), link: LinkId::Pinned("xdp-uplink", pin) });
        Ok(())
    }

    /// Turns on ending the node's connected UDP sockets to backends that leave (see
    /// [`lb::LbMaps::end_udp_sockets`]), run in `node_netns` (`None`: this process's namespace).
    /// [`Datapath::attach_socket_lb`] calls it with `None`.
    pub fn end_udp_sockets_in(&mut self, node_netns: Option<PathBuf>) {
        self.lb.store_mut().socket_lb = Some(node_netns);
    }

    /// Attaches the socket-level load balancer (connect, UDP sendmsg/recvmsg, getpeername) to the
    /// cgroup at `cgroup` — the root of the v2 hierarchy ([`socklb::root_cgroup`]) for all the
    /// node's processes.
    /// It serves only sockets of the namespace whose cookie the datapath was loaded with
    /// (`LbConfig::netns_cookie`). Links are pinned (`<pin dir>/links/sock-<program>`).
    pub fn attach_socket_lb(&mut self, cgroup: &std::path::Path) -> Result<(), DatapathError> {
        if self.lb.store_mut().socket_lb.is_none() {
            self.end_udp_sockets_in(None);
        }
        for name in socklb::PROGRAMS {
            let pin = self.links_dir.join(format!("{}{name}", names::LINK_SOCK_PREFIX));
            let prog = program_mut::<CgroupSockAddr>(&mut self.ebpf, name)?;
            socklb::attach(prog, name, cgroup, &pin)?;
            let hook = match name {
                names::PROG_CONNECT4 => "cgroup-connect4",
                names::PROG_SENDMSG4 => "cgroup-sendmsg4",
                names::PROG_RECVMSG4 => "cgroup-recvmsg4",
                _ => "cgroup-getpeername4",
            };
            self.attachments
                .push(Attachment { iface: cgroup.display().to_string(), link: LinkId::Pinned(hook, pin) });
        }
        Ok(())
    }

    /// Attaches the ClusterIP load balancer at tcx ingress of `iface`, the host end of a pod's veth
    /// (its ingress is everything the pod sends).
    ///
    /// The tcx link is pinned under `<pin dir>/links/`. If a previous agent left one there, this
    /// program replaces the old one inside the same link (`bpf_link_update`): there is no moment
    /// without a load balancer on the interface, so established flows never see an untranslated
    /// packet across an agent restart or upgrade.
    pub fn attach_lb(&mut self, iface: &str) -> Result<(), DatapathError> {
        let pin = self.links_dir.join(format!("{}{iface}", names::LINK_LB_PREFIX));
        let prog = program_mut::<SchedClassifier>(&mut self.ebpf, names::PROG_LB)?;
        pinned::attach(prog, names::PROG_LB, iface, &pin)?;
        self.attachments.push(Attachment { iface: iface.to_owned(), link: LinkId::Pinned("tc-lb", pin) });
        Ok(())
    }

    /// Interfaces and hooks currently attached, for reports.
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.attachments
            .iter()
            .map(|a| {
                let hook = match a.link {
                    LinkId::Xdp(_) => Hook::Xdp.as_str(),
                    LinkId::Tc(direction, _) => direction.hook().as_str(),
                    LinkId::Pinned(hook, _) => hook,
                };
                (a.iface.clone(), hook)
            })
            .collect()
    }

    /// Detaches every program this datapath attached, carrying on past failures and returning the
    /// first one. A link whose detach failed stays owned by its program and goes when `self` drops.
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        let mut first_err = None;
        for Attachment { iface, link } in std::mem::take(&mut self.attachments) {
            let result = match link {
                LinkId::Xdp(id) => program_mut::<Xdp>(&mut self.ebpf, names::PROG_XDP)?.detach(id),
                LinkId::Tc(direction, id) => {
                    program_mut::<SchedClassifier>(&mut self.ebpf, direction.program())?.detach(id)
                }
                LinkId::Pinned(_, pin) => pinned::unpin(&pin),
            };
            if let Err(source) = result {
                first_err.get_or_insert(DatapathError::Detach { iface, source });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The load balancer's maps, for direct reads and writes (tests, the CLI).
    pub fn lb(&mut self) -> &mut lb::LbMaps {
        self.lb.store_mut()
    }

    /// The service proxy's way in: frontends applied to the maps with minimal writes.
    pub fn dataplane(&mut self) -> &mut LbDataplane<lb::LbMaps> {
        &mut self.lb
    }

    /// Runs the load-balancer program on `packet` through BPF_PROG_TEST_RUN (`repeat` times),
    /// writing the resulting packet to `out`. Used by the packet fixtures and the per-packet
    /// benchmark; the maps are the live ones.
    pub fn test_run_lb(
        &self,
        packet: &[u8],
        out: &mut [u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        let err = |source| DatapathError::TestRun { name: names::PROG_LB, source };
        let program =
            self.ebpf.program(names::PROG_LB).ok_or(DatapathError::MissingProgram(names::PROG_LB))?;
        let program: &SchedClassifier = program.try_into().map_err(err)?;
        let opts =
            aya::TestRunOptions { data_in: Some(packet), data_out: Some(out), repeat, ..Default::default() };
        let result = aya::TestRun::test_run(program, opts).map_err(err)?;
        Ok(TestRunOutcome {
            verdict: result.return_value as i32,
            len: result.data_size_out as usize,
            duration: result.duration,
        })
    }

    /// Runs the uplink program on `packet` through BPF_PROG_TEST_RUN as if it had arrived on the
    /// interface `ifindex` of the calling thread's network namespace (its routes and neighbours
    /// answer the program's FIB lookups). Verdicts are XDP actions (`XDP_DROP` 1, `XDP_PASS` 2,
    /// `XDP_TX` 3, `XDP_REDIRECT` 4).
    pub fn test_run_uplink(
        &self,
        packet: &[u8],
        out: &mut [u8],
        ifindex: u32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        let err = |source| DatapathError::TestRun { name: names::PROG_UPLINK, source };
        let program =
            self.ebpf.program(names::PROG_UPLINK).ok_or(DatapathError::MissingProgram(names::PROG_UPLINK))?;
        let program: &Xdp = program.try_into().map_err(err)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let md: Vec<u8> = [0, len, 0, ifindex, 0, 0].iter().flat_map(|w: &u32| w.to_ne_bytes()).collect();
        let opts = aya::TestRunOptions {
            data_in: Some(packet),
            data_out: Some(out),
            ctx_in: Some(&md),
            repeat,
            ..Default::default()
        };
        let result = aya::TestRun::test_run(program, opts).map_err(err)?;
        Ok(TestRunOutcome {
            verdict: result.return_value as i32,
            len: result.data_size_out as usize,
            duration: result.duration,
        })
    }

    /// Sums the per-CPU counters of every hook.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        let map = self.ebpf.map(names::MAP_COUNTERS).ok_or(DatapathError::MissingMap(names::MAP_COUNTERS))?;
        Counters::read(map)
    }

    /// Takes the aya-log ring buffer, delivering the programs' log lines to `logger`. Can be called
    /// once; call `flush()` on the result (or wrap it in [`logs::forward`]) to deliver lines.
    pub fn take_logs<L: log::Log>(&mut self, logger: L) -> Result<aya_log::EbpfLogger<L>, DatapathError> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger).map_err(DatapathError::Logs)
    }
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(DatapathError::MissingProgram(name))?;
    program.try_into().map_err(|source| DatapathError::Program { name, source })
}
