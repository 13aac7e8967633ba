//! Attaching through pinned bpf links, so an attachment outlives the agent and the next agent
//! swaps its program into the same link (`bpf_link_update`) instead of detaching and attaching:
//! there is never a moment without the program on the interface.

use std::path::Path;

use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    tc::{SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions},
    xdp::{XdpLink, XdpLinkId},
};

use super::DatapathError;

/// A program type whose links can be pinned and taken over.
pub(super) trait Pinnable {
    type Link: TryFrom<FdLink, Error = LinkError> + TryInto<FdLink, Error = LinkError>;
    type Id;
    /// Swaps this program into `link` (a previous agent's).
    fn replace_in(&mut self, link: Self::Link) -> Result<Self::Id, ProgramError>;
    /// A new link on `iface`.
    fn attach_new(&mut self, iface: &str) -> Result<Self::Id, ProgramError>;
    fn take(&mut self, id: Self::Id) -> Result<Self::Link, ProgramError>;
}

/// tcx ingress.
impl Pinnable for SchedClassifier {
    type Link = SchedClassifierLink;
    type Id = SchedClassifierLinkId;
    fn replace_in(&mut self, link: Self::Link) -> Result<Self::Id, ProgramError> {
        self.attach_to_link(link)
    }
    fn attach_new(&mut self, iface: &str) -> Result<Self::Id, ProgramError> {
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        self.attach_with_options(iface, TcAttachType::Ingress, options)
    }
    fn take(&mut self, id: Self::Id) -> Result<Self::Link, ProgramError> {
        self.take_link(id)
    }
}

/// XDP, driver mode where the driver has it (the kernel falls back to generic otherwise).
impl Pinnable for Xdp {
    type Link = XdpLink;
    type Id = XdpLinkId;
    fn replace_in(&mut self, link: Self::Link) -> Result<Self::Id, ProgramError> {
        self.attach_to_link(link)
    }
    fn attach_new(&mut self, iface: &str) -> Result<Self::Id, ProgramError> {
        self.attach(iface, XdpMode::default())
    }
    fn take(&mut self, id: Self::Id) -> Result<Self::Link, ProgramError> {
        self.take_link(id)
    }
}

/// Attaches `prog` (named `name`) to `iface` through the link pinned at `pin`: the one a previous
/// agent left there if it is still alive, else a new one, pinned. The pin is the link's only
/// owner afterwards.
pub(super) fn attach<P: Pinnable>(
    prog: &mut P,
    name: &'static str,
    iface: &str,
    pin: &Path,
) -> Result<(), DatapathError> {
    let err = |source| DatapathError::Attach { program: name, iface: iface.to_owned(), source };
    let link_err = |source| DatapathError::Link { iface: iface.to_owned(), source };
    let replaced = match PinnedLink::from_pin(pin) {
        Ok(old) => match prog.replace_in(P::Link::try_from(FdLink::from(old)).map_err(link_err)?) {
            Ok(id) => Some(id),
            // The old link went defunct with its interface: start afresh.
            Err(_) => {
                std::fs::remove_file(pin)
                    .map_err(|source| DatapathError::Bpffs { path: pin.to_owned(), source })?;
                None
            }
        },
        Err(_) => None,
    };
    let adopted = replaced.is_some();
    let id = match replaced {
        Some(id) => id,
        None => prog.attach_new(iface).map_err(err)?,
    };
    let link: FdLink = prog.take(id).map_err(err)?.try_into().map_err(link_err)?;
    if !adopted {
        link.pin(pin).map_err(|e| DatapathError::Pin { path: pin.to_owned(), source: e })?;
    }
    Ok(())
}

/// Detaches a pinned link: removing the pin drops its last reference.
pub(super) fn unpin(pin: &Path) -> Result<(), ProgramError> {
    match PinnedLink::from_pin(pin) {
        Ok(link) => link.unpin().map(drop).map_err(ProgramError::IOError),
        Err(_) if !pin.exists() => Ok(()),
        Err(e) => Err(ProgramError::IOError(std::io::Error::other(e))),
    }
}
