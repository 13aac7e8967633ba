//! `skiff-cni`: run by a container runtime as a CNI plugin (environment + configuration on
//! stdin, result or error JSON on stdout), or by an operator as `skiff-cni install --subnet …`.

use std::io::Read as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("install") {
        let installed = skiff_cni::install::Install::parse(&args[1..]).and_then(|install| {
            let me = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
            install.run(&me)
        });
        if let Err(e) = installed {
            eprintln!("skiff-cni install: {e}");
            std::process::exit(2);
        }
        return;
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = skiff_cni::spec::error::CniError::io("reading the configuration from stdin", e);
        println!("{}", err.to_json(skiff_cni::spec::LATEST));
        std::process::exit(1);
    }
    let outcome = skiff_cni::cmd::run(|k| std::env::var(k).ok(), &stdin);
    if let Some(out) = outcome.stdout {
        println!("{out}");
    }
    std::process::exit(if outcome.success { 0 } else { 1 });
}
