//! Creates a pair topology and a pin dir, prints their names, and holds them until stdin closes.
//! The harness tests SIGKILL it to leave real leftovers behind and check that they are swept.

use std::io::{BufRead, Write};

use skiff_tests::{PairTopology, PinDir};

fn main() {
    let topo = PairTopology::new("hold").unwrap_or_else(|e| fail(&e));
    let pins = PinDir::new("hold").unwrap_or_else(|e| fail(&e));
    println!("{} {} {}", topo.client.name(), topo.server.name(), pins.path().display());
    std::io::stdout().flush().ok();
    // Blocks until the parent closes stdin (or kills us, which is the point).
    let _ = std::io::stdin().lock().lines().next();
}

fn fail(err: &skiff_tests::Error) -> ! {
    eprintln!("hold-topology: {err}");
    std::process::exit(1);
}
