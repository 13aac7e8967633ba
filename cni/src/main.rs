//! `skiff-cni`: skiff's CNI 1.1 plugin. The protocol, routed veth networking and IPAM land with
//! the CNI issue; until then the binary refuses to run instead of pretending.

fn main() {
    eprintln!("skiff-cni {}: the CNI plugin is not built yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(1);
}
