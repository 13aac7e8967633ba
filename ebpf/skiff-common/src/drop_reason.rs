//! Why the datapath dropped or rejected a packet. Stable numbering: these are counter slots in a
//! pinned map and appear in traces, so a value is never renumbered or reused.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A frontend with no usable endpoint: the connection was rejected (TCP RST / ICMP unreachable).
    NoEndpoints = 1,
    /// `internalTrafficPolicy: Local` and no endpoint on this node: rejected.
    NoLocalEndpoints = 2,
    /// A protocol the load balancer does not translate (SCTP to a frontend): rejected.
    UnsupportedProtocol = 3,
    /// Headers too short or inconsistent, addressed to a frontend: dropped.
    InvalidPacket = 4,
    /// The flow's backend was removed: TCP gets a RST so the client learns at once.
    BackendGone = 5,
    /// Conntrack insert failed (map pressure): the packet was still translated.
    CtInsertFailed = 6,
    /// The frontend's Maglev row points at a backend that does not exist: dropped.
    MaglevInconsistent = 7,
    /// A non-first fragment addressed to a frontend whose first fragment was not seen: dropped.
    FragmentNotTracked = 8,
    /// Building the reject reply failed (e.g. IP options on the rejected packet): dropped instead.
    RejectFailed = 9,
    /// Addressed to a ClusterIP on a port/protocol it does not serve: rejected.
    UnknownPort = 10,
    /// An external flow chose a backend on another node, and no SNAT port was free for it.
    SnatPortsExhausted = 11,
    /// An external flow to another node's backend, or its reply, has no route or neighbour to
    /// leave by from the uplink program (the neighbour is being resolved; the client retransmits).
    NoRoute = 12,
    /// A packet the uplink would forward arrived with TTL ≤ 1.
    TtlExceeded = 13,
    /// An external flow chose a backend on another node, but the agent gave the datapath no node
    /// address to SNAT to.
    NoNodeAddress = 14,
    /// A client outside the `loadBalancerSourceRanges` of a load-balancer address: dropped.
    SourceRangeDenied = 15,
}

impl DropReason {
    /// Slots in the per-CPU counters map (index = discriminant; slot 0 unused).
    pub const SLOTS: u32 = 16;
    pub const ALL: [DropReason; 15] = [
        DropReason::NoEndpoints,
        DropReason::NoLocalEndpoints,
        DropReason::UnsupportedProtocol,
        DropReason::InvalidPacket,
        DropReason::BackendGone,
        DropReason::CtInsertFailed,
        DropReason::MaglevInconsistent,
        DropReason::FragmentNotTracked,
        DropReason::RejectFailed,
        DropReason::UnknownPort,
        DropReason::SnatPortsExhausted,
        DropReason::NoRoute,
        DropReason::TtlExceeded,
        DropReason::NoNodeAddress,
        DropReason::SourceRangeDenied,
    ];

    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// The reason with `slot`, if there is one.
    pub fn from_slot(slot: u32) -> Option<DropReason> {
        DropReason::ALL.iter().copied().find(|r| r.slot() == slot)
    }

    /// The variant's name (`NoEndpoints`): stable, for scripts and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoEndpoints => "NoEndpoints",
            DropReason::NoLocalEndpoints => "NoLocalEndpoints",
            DropReason::UnsupportedProtocol => "UnsupportedProtocol",
            DropReason::InvalidPacket => "InvalidPacket",
            DropReason::BackendGone => "BackendGone",
            DropReason::CtInsertFailed => "CtInsertFailed",
            DropReason::MaglevInconsistent => "MaglevInconsistent",
            DropReason::FragmentNotTracked => "FragmentNotTracked",
            DropReason::UnknownPort => "UnknownPort",
            DropReason::RejectFailed => "RejectFailed",
            DropReason::SnatPortsExhausted => "SnatPortsExhausted",
            DropReason::NoRoute => "NoRoute",
            DropReason::TtlExceeded => "TtlExceeded",
            DropReason::NoNodeAddress => "NoNodeAddress",
            DropReason::SourceRangeDenied => "SourceRangeDenied",
        }
    }

    /// The reason in words, for CLIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NoEndpoints => "service has no endpoints (rejected)",
            DropReason::NoLocalEndpoints => "no node-local endpoints (rejected)",
            DropReason::UnsupportedProtocol => "protocol not supported by the load balancer (rejected)",
            DropReason::InvalidPacket => "truncated or malformed headers",
            DropReason::BackendGone => "backend removed; flow reset",
            DropReason::CtInsertFailed => "conntrack insert failed",
            DropReason::MaglevInconsistent => "Maglev row names a missing backend",
            DropReason::FragmentNotTracked => "fragment of an untracked datagram to a frontend",
            DropReason::UnknownPort => "port not served by this ClusterIP (rejected)",
            DropReason::RejectFailed => "could not build the reject reply",
            DropReason::SnatPortsExhausted => "no free SNAT port toward a remote backend",
            DropReason::NoRoute => "no route or neighbour to forward by from XDP",
            DropReason::TtlExceeded => "TTL exceeded while forwarding",
            DropReason::NoNodeAddress => "remote backend but no node address to SNAT to",
            DropReason::SourceRangeDenied => "client outside the load balancer's source ranges",
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < DropReason::ALL.len() {
        assert!(DropReason::ALL[i].slot() < DropReason::SLOTS);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn numbering_is_stable() {
        // Pinned maps and traces depend on these values; a change here is an ABI break.
        let values: [u32; 15] = DropReason::ALL.map(DropReason::slot);
        assert_eq!(values, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn names_are_the_variant_names_and_slots_round_trip() {
        extern crate std;
        for r in DropReason::ALL {
            assert_eq!(r.name(), std::format!("{r:?}"));
            assert_eq!(DropReason::from_slot(r.slot()), Some(r));
        }
        assert_eq!(DropReason::from_slot(0), None);
    }
}
