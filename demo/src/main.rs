//! `skiff-echo`: the lab's demo workload. An HTTP server that says which pod answered and whom
//! it saw (so load balancing and source-address preservation are visible from a client), plus
//! TCP and UDP echo for connectivity checks and benchmarks. Built static for the
//! `skiff.local/echo` image, where it runs as PID 1.

mod args;
mod echo;
mod http;
mod identity;

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::Arc,
};

use nix::sys::signal::{SigSet, Signal};

fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args::Parsed::Run(a)) => a,
        Ok(args::Parsed::Help) => {
            println!("{}", args::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("skiff-echo: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    // Block the stop signals before any thread exists (threads inherit the mask), then take them
    // synchronously below. This also matters as PID 1 in a container, where the kernel drops
    // SIGTERM for a process that has no handler.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("skiff-echo: blocking signals: {e}");
        std::process::exit(1);
    }
    let id = Arc::new(identity::Identity::from_env());
    let bound = (|| {
        let http = TcpListener::bind(SocketAddr::new(args.bind, args.http))?;
        let tcp = TcpListener::bind(SocketAddr::new(args.bind, args.tcp))?;
        let udp = UdpSocket::bind(SocketAddr::new(args.bind, args.udp))?;
        std::io::Result::Ok((http, tcp, udp))
    })();
    let (http, tcp, udp) = match bound {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skiff-echo: binding {}: {e}", args.bind);
            std::process::exit(1);
        }
    };
    let port = |a: std::io::Result<SocketAddr>| a.map_or(0, |a| a.port());
    // One line, after every socket is bound: tests and scripts wait for it.
    println!(
        "skiff-echo {} listening: http={} tcp={} udp={} pod={}",
        env!("CARGO_PKG_VERSION"),
        port(http.local_addr()),
        port(tcp.local_addr()),
        port(udp.local_addr()),
        id.pod
    );
    std::thread::spawn(move || http::serve(http, id));
    std::thread::spawn(move || echo::serve_tcp(tcp));
    std::thread::spawn(move || echo::serve_udp(udp));
    match stop.wait() {
        Ok(sig) => println!("skiff-echo: {sig}, exiting"),
        Err(e) => eprintln!("skiff-echo: waiting for signals: {e}"),
    }
    // Nothing to flush or drain: open connections are simply closed by the exit.
}
