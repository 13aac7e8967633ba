//! Names and MAC addresses derived from an attachment (container id + interface name): the same
//! attachment always gets the same host veth name and MACs, so DEL and GC find what ADD made even
//! when its records were lost.

use crate::spec::config::Attachment;

/// Prefix of every host-side veth this plugin creates.
pub const HOST_PREFIX: &str = "skf";

/// FNV-1a, 64 bits: stable across builds and platforms.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    // Each part ends with a zero byte, so ("ab", "c") and ("a", "bc") differ.
    for byte in parts.iter().flat_map(|p| p.bytes().chain(std::iter::once(0))) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The host side of the attachment's veth: `skf` + 11 hex digits (14 bytes, under Linux's 15).
pub fn host_veth(a: &Attachment) -> String {
    format!("{HOST_PREFIX}{:011x}", fnv1a(&[&a.container_id, &a.ifname]) & 0xfff_ffff_ffff)
}

/// Whether `name` has the form of a [`host_veth`] name (what GC may take for this plugin's own).
pub fn is_host_veth(name: &str) -> bool {
    name.strip_prefix(HOST_PREFIX)
        .is_some_and(|rest| rest.len() == 11 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A locally administered unicast MAC for `side` ("pod" or "host") of the attachment.
pub fn mac(a: &Attachment, side: &str) -> [u8; 6] {
    let h = fnv1a(&[side, &a.container_id, &a.ifname]).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = Attachment { container_id: "abc".into(), ifname: "eth0".into() };
        let b = Attachment { container_id: "abc".into(), ifname: "eth1".into() };
        assert_eq!(host_veth(&a), host_veth(&a.clone()));
        assert_ne!(host_veth(&a), host_veth(&b));
        assert!(host_veth(&a).len() <= 15);
        assert_ne!(mac(&a, "pod"), mac(&a, "host"));
        assert_eq!(mac(&a, "pod")[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(format_mac(&[2, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }

    #[test]
    fn host_veth_names_are_recognised_as_such() {
        for i in 0..1000 {
            let name = host_veth(&Attachment { container_id: format!("c{i}"), ifname: "eth0".into() });
            assert!(is_host_veth(&name), "{name}");
        }
        let others = ["eth0", "skf", "skf0123456789", "skf0123456789ab", "skf0123456789g", "xskf0123456789a"];
        for other in others {
            assert!(!is_host_veth(other), "{other}");
        }
    }
}
