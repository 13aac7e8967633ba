//! Running helper programs (iproute2, mount, openssl, skopeo) with errors that say what failed.

use std::process::Command;

use crate::{Error, Result};

/// Runs `program args…`, returning stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    let rendered = || format!("{program} {}", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| Error::io(rendered(), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: rendered(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
