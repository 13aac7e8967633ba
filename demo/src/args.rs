//! Command-line flags, hand-rolled: three ports and a bind address do not justify clap in a
//! binary that is built twice (host and static).

use std::net::IpAddr;

pub const USAGE: &str = "\
usage: skiff-echo [--http PORT] [--tcp PORT] [--udp PORT] [--bind ADDR]

  --http PORT   HTTP server: GET / answers JSON naming the pod and the client (default 8080)
  --tcp PORT    TCP echo: every byte is sent back (default 7000)
  --udp PORT    UDP echo: every datagram is sent back unchanged (default 7001)
  --bind ADDR   address to listen on (default 0.0.0.0)

A port of 0 picks a free one; the ports actually bound are printed on stdout.
Exits 0 on SIGTERM or SIGINT.";

/// What to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub http: u16,
    pub tcp: u16,
    pub udp: u16,
    pub bind: IpAddr,
}

impl Default for Args {
    fn default() -> Self {
        Self { http: 8080, tcp: 7000, udp: 7001, bind: IpAddr::from([0, 0, 0, 0]) }
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Args),
    Help,
}

/// Parses the flags after the program name; `--flag value` and `--flag=value` both work.
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut args = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Parsed::Help);
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        let port = || value.parse::<u16>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--http" => args.http = port()?,
            "--tcp" => args.tcp = port()?,
            "--udp" => args.udp = port()?,
            "--bind" => args.bind = value.parse().map_err(|e| format!("--bind {value}: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Parsed::Run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str]) -> Result<Parsed, String> {
        parse(argv.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(run(&[]), Ok(Parsed::Run(Args::default())));
        assert_eq!(
            run(&["--http", "80", "--tcp=7", "--udp", "0", "--bind", "::1"]),
            Ok(Parsed::Run(Args { http: 80, tcp: 7, udp: 0, bind: "::1".parse().expect("addr") }))
        );
        assert_eq!(run(&["--udp", "9", "-h"]), Ok(Parsed::Help));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(run(&["--http"]).is_err());
        assert!(run(&["--http", "70000"]).is_err());
        assert!(run(&["--bind", "nope"]).is_err());
        assert!(run(&["--verbose", "1"]).is_err());
    }
}
