//! Running iptables-restore, iptables and conntrack, in the node's network namespace when the
//! agent runs outside it (the child enters it between fork and exec).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Which iptables: the system's choice (`iptables`, usually the nf_tables compat layer on current
/// distributions), or one of the two explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Variant {
    #[default]
    System,
    Legacy,
    Nft,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::System => "",
            Variant::Legacy => "-legacy",
            Variant::Nft => "-nft",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("running {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} failed: {stderr}")]
    Failed { program: String, args: String, stderr: String },
}

/// The commands, bound to a namespace.
#[derive(Debug, Clone)]
pub struct Iptables {
    variant: Variant,
    netns: Option<PathBuf>,
}

impl Iptables {
    pub fn new(variant: Variant, netns: Option<PathBuf>) -> Self {
        Self { variant, netns }
    }

    fn command(&self, program: &str) -> Result<Command, IptablesError> {
        let mut cmd = Command::new(program);
        if let Some(netns) = &self.netns {
            let file = std::fs::File::open(netns)
                .map_err(|source| IptablesError::Spawn { program: format!("{program} (netns)"), source })?;
            // SAFETY: setns is one system call on a descriptor opened before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
        Ok(cmd)
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
        let mut cmd = self.command(program)?;
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let spawn = |source| IptablesError::Spawn { program: program.to_owned(), source };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(input.as_bytes()).map_err(spawn)?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            return Err(IptablesError::Failed {
                program: program.to_owned(),
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-restore --noflush`: the input's chains are replaced, all others kept.
    pub fn restore(&self, input: &str) -> Result<(), IptablesError> {
        let program = format!("iptables{}-restore", self.variant.suffix());
        self.run(&program, &["--noflush", "--wait"], Some(input)).map(drop)
    }

    /// `iptables-save -t <table>`.
    pub fn save(&self, table: &str) -> Result<String, IptablesError> {
        let program = format!("iptables{}-save", self.variant.suffix());
        self.run(&program, &["-t", table], None)
    }

    /// `iptables -w -t <table> <op> <chain> <rule…>`; `rule` is one line as in a restore file.
    pub fn rule(&self, table: &str, op: &str, chain: &str, rule: &str) -> Result<(), IptablesError> {
        let program = format!("iptables{}", self.variant.suffix());
        let words = split_rule(rule);
        let mut args = vec!["-w", "-t", table, op, chain];
        args.extend(words.iter().map(String::as_str));
        self.run(&program, &args, None).map(drop)
    }

    /// Deletes the conntrack entries of `proto` flows to `dst:dport` answered by `reply_src`
    /// (`conntrack -D`); finding none is fine.
    pub fn forget_flows(
        &self,
        proto: &str,
        dst: &str,
        dport: u16,
        reply_src: &str,
    ) -> Result<(), IptablesError> {
        let port = dport.to_string();
        let args = ["-D", "-p", proto, "--orig-dst", dst, "--orig-port-dst", &port, "--reply-src", reply_src];
        match self.run("conntrack", &args, None) {
            // conntrack exits 1 when it deleted nothing.
            Err(IptablesError::Failed { stderr, .. }) if stderr.contains("0 flow entries") => Ok(()),
            other => other.map(drop),
        }
    }

    pub fn netns(&self) -> Option<&Path> {
        self.netns.as_deref()
    }
}

/// Splits a rule the way iptables-restore does: on spaces, with double-quoted words kept whole.
pub fn split_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in rule.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_comments_stay_one_word() {
        let words = split_rule("-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES");
        assert_eq!(
            words,
            ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]
        );
        assert_eq!(
            split_rule("-m comment --comment \"\" -j X"),
            ["-m", "comment", "--comment", "", "-j", "X"]
        );
    }
}
