//! `skiff-control`: skiff's control plane. The API server lands next; until then the binary refuses
//! to run instead of pretending.

fn main() {
    eprintln!("skiff-control {}: the API server is not built yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(1);
}
