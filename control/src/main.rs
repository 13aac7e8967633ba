//! `skiff-control`: skiff's control plane (API server, storage, scheduler, controllers, PKI).
//! It lands with the API-server issue; until then the binary refuses to run instead of pretending.

fn main() {
    eprintln!("skiff-control {}: the control plane is not built yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(1);
}
