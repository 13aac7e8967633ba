//! The Service datapath on the pod's veth: the agent pins its `skiff_lb` program under
//! `<pin dir>/progs/`; ADD attaches it to the ingress of the host-side veth (everything the pod
//! sends) before the pod's default route exists.
//!
//! The attachment is a classic `cls_bpf` filter in direct-action mode on a `clsact` qdisc, at a
//! fixed priority and handle ([`names::LB_TC_PRIORITY`], [`names::LB_TC_HANDLE`]), not a tcx link:
//! creating a tcx link waits out an RCU grace period (11 ms on the project VM, most of a pod's
//! network setup), the classic filter does not (0.5 ms). It lives and dies with the interface, so
//! DEL needs no cleanup of its own, and the agent upgrades the program by replacing the filter at
//! its address, which the kernel does atomically.

use std::path::{Path, PathBuf};

use aya::programs::{
    SchedClassifier, TcAttachType,
    tc::{NlOptions, TcAttachOptions, TcError, TcHandle, qdisc_add_clsact},
};
use skiff_common::names;

use crate::spec::error::{CniError, Result, code};

pub fn program_pin(pin_dir: &Path) -> PathBuf {
    pin_dir.join(names::PIN_PROGS_DIR).join(names::PROG_LB)
}

/// Whether the agent's datapath is loaded; code 50 if not (pods would bypass Service load balancing).
pub fn available(pin_dir: &Path) -> Result<()> {
    let pin = program_pin(pin_dir);
    if pin.exists() {
        Ok(())
    } else {
        Err(CniError::new(
            code::UNAVAILABLE,
            format!(
                "the skiff datapath is not loaded ({} is missing): is skiff-agent running?",
                pin.display()
            ),
        ))
    }
}

/// Attaches the load balancer to the ingress of `iface`.
pub fn attach(pin_dir: &Path, iface: &str) -> Result<()> {
    available(pin_dir)?;
    let failed = |e: &dyn std::fmt::Display| {
        CniError::new(code::DATAPATH, format!("attaching {} to {iface}", names::PROG_LB)).details(e)
    };
    match qdisc_add_clsact(iface) {
        Ok(()) => {}
        // A clsact qdisc already there (someone else's filters): add ours beside them.
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(nix::errno::Errno::EEXIST as i32) => {}
        Err(e) => return Err(failed(&e)),
    }
    let mut prog = SchedClassifier::from_pin(program_pin(pin_dir)).map_err(|e| failed(&e))?;
    let options = TcAttachOptions::Netlink(NlOptions {
        priority: names::LB_TC_PRIORITY,
        handle: TcHandle::new(0, names::LB_TC_HANDLE),
        classid: None,
    });
    let id = prog.attach_with_options(iface, TcAttachType::Ingress, options).map_err(|e| failed(&e))?;
    // The filter stays with the interface: dropping aya's handle would detach it.
    let link = prog.take_link(id).map_err(|e| failed(&e))?;
    std::mem::forget(link);
    Ok(())
}

fn filter_link(iface: &str) -> Result<aya::programs::tc::SchedClassifierLink> {
    aya::programs::tc::SchedClassifierLink::attached(
        iface,
        TcAttachType::Ingress,
        names::LB_TC_PRIORITY,
        TcHandle::new(0, names::LB_TC_HANDLE),
        None,
    )
    .map_err(|e| CniError::new(code::DATAPATH, format!("no interface {iface}")).details(e))
}

/// Puts the agent's current program on `iface`: swapped into the filter already there (the kernel
/// replaces it atomically: an agent upgrade, or a program left by an earlier agent), or attached
/// afresh where there is none (a pod made while the iptables mode ran).
pub fn reattach(pin_dir: &Path, iface: &str) -> Result<()> {
    available(pin_dir)?;
    let mut prog = SchedClassifier::from_pin(program_pin(pin_dir))
        .map_err(|e| CniError::new(code::DATAPATH, format!("loading {}", names::PROG_LB)).details(e))?;
    match prog.attach_to_link(filter_link(iface)?) {
        Ok(id) => {
            let link = prog
                .take_link(id)
                .map_err(|e| CniError::new(code::DATAPATH, "taking the link").details(e))?;
            std::mem::forget(link);
            Ok(())
        }
        Err(_) => attach(pin_dir, iface),
    }
}

/// Takes the load balancer's filter off `iface` (the agent switching to its iptables mode); none
/// there is fine.
pub fn detach(iface: &str) -> Result<()> {
    let _ = aya::programs::links::Link::detach(filter_link(iface)?);
    Ok(())
}
