//! `cargo xtask install`: release binaries, systemd units and example settings onto this host.
//!
//! The install is a list of [`Action`]s computed first ([`plan`]), so `--dry-run` prints exactly
//! what a real run does, and the tests run the same list into a staging directory.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::step::{self, cargo, step};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Binaries go to <PREFIX>/bin (the units' ExecStart lines follow it).
    #[arg(long, default_value = "/usr/local")]
    pub prefix: PathBuf,
    /// Stage every file under this directory instead of / (for packaging); skips daemon-reload.
    #[arg(long)]
    pub destdir: Option<PathBuf>,
    /// Print what would be built, installed and run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The binaries the installer puts in place: (name, directory relative to the prefix, or
/// absolute, required). `skiff` is optional so an install from a tree without the CLI still works.
const BINARIES: &[(&str, Dest, bool)] = &[
    ("skiff-control", Dest::PrefixBin, true),
    ("skiff-agent", Dest::PrefixBin, true),
    ("skiff", Dest::PrefixBin, false),
    // Where container runtimes and the kubelet look for CNI plugins.
    ("skiff-cni", Dest::Absolute("/opt/cni/bin"), true),
];

#[derive(Debug, Clone, Copy)]
enum Dest {
    PrefixBin,
    Absolute(&'static str),
}

/// The units, as written in `deploy/systemd/`, and the example settings each one reads.
const UNITS: &[(&str, &str, &str)] = &[
    ("skiff-control.service", "skiff-control.env", "/etc/default/skiff-control"),
    ("skiff-agent.service", "skiff-agent.env", "/etc/default/skiff-agent"),
];

pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The prefix the units in `deploy/systemd/` are written for.
const UNIT_PREFIX_BIN: &str = "/usr/local/bin/";

/// One step of an install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Copy an executable.
    Binary { from: PathBuf, to: PathBuf },
    /// Write a file (0644), replacing what is there.
    Write { to: PathBuf, text: String },
    /// Write a file (0644) only if none is there: the operator's settings are never overwritten.
    WriteIfMissing { to: PathBuf, text: String },
    /// Run a command.
    Run { program: String, args: Vec<String> },
    /// Say why something is not done.
    Note(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Binary { from, to } => write!(f, "install -m 0755 {} {}", from.display(), to.display()),
            Action::Write { to, .. } => write!(f, "write {}", to.display()),
            Action::WriteIfMissing { to, .. } => write!(f, "write {} (unless it exists)", to.display()),
            Action::Run { program, args } => write!(f, "run {program} {}", args.join(" ")),
            Action::Note(text) => write!(f, "note: {text}"),
        }
    }
}

/// What to install where.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where the built binaries are.
    pub bin_dir: PathBuf,
    /// `deploy/systemd/` of the source tree.
    pub unit_src: PathBuf,
    pub prefix: PathBuf,
    /// Staging root; `None` is the live system.
    pub destdir: Option<PathBuf>,
    /// Whether systemd runs this host (`/run/systemd/system` exists).
    pub systemd_running: bool,
}

impl Layout {
    /// `path` (absolute) under the staging root, if any.
    fn target(&self, path: &Path) -> PathBuf {
        match &self.destdir {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }
}

/// The unit text with its binaries under `<prefix>/bin`.
pub fn unit_for_prefix(text: &str, prefix: &Path) -> String {
    let bin = format!("{}/", prefix.join("bin").display());
    text.replace(UNIT_PREFIX_BIN, &bin)
}

/// Every action of an install, in order. With `assume_built` (a dry run before any build), the
/// binaries are planned whether or not they exist yet.
pub fn plan(layout: &Layout, assume_built: bool) -> anyhow::Result<Vec<Action>> {
    anyhow::ensure!(layout.prefix.is_absolute(), "--prefix {} is not absolute", layout.prefix.display());
    let mut actions = Vec::new();
    for &(name, dest, required) in BINARIES {
        let from = layout.bin_dir.join(name);
        if !assume_built && !from.exists() {
            if required {
                bail!("{} is missing (build it first)", from.display());
            }
            actions.push(Action::Note(format!("{name} was not built; not installed")));
            continue;
        }
        let dir = match dest {
            Dest::PrefixBin => layout.prefix.join("bin"),
            Dest::Absolute(dir) => PathBuf::from(dir),
        };
        actions.push(Action::Binary { from, to: layout.target(&dir.join(name)) });
    }
    for &(unit, env, env_dest) in UNITS {
        let read = |name: &str| {
            let path = layout.unit_src.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let text = unit_for_prefix(&read(unit)?, &layout.prefix);
        actions.push(Action::Write { to: layout.target(&Path::new(UNIT_DIR).join(unit)), text });
        actions.push(Action::WriteIfMissing { to: layout.target(Path::new(env_dest)), text: read(env)? });
    }
    if layout.destdir.is_some() {
        actions.push(Action::Note("staged under --destdir; no systemctl daemon-reload".into()));
    } else if layout.systemd_running {
        actions.push(Action::Run { program: "systemctl".into(), args: vec!["daemon-reload".into()] });
    } else {
        actions.push(Action::Note(
            "systemd is not running here (no /run/systemd/system); skipped systemctl daemon-reload".into(),
        ));
    }
    Ok(actions)
}

/// Carries out `actions`.
pub fn apply(actions: &[Action]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = |to: &Path| -> anyhow::Result<()> {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    };
    for action in actions {
        match action {
            Action::Binary { from, to } => {
                parent(to)?;
                // Beside the target, then renamed: a running binary is replaced, not rewritten.
                let tmp = to.with_extension("skiff-install");
                std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
                std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
            }
            Action::Write { to, text } => {
                parent(to)?;
                std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
                std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))?;
            }
            Action::WriteIfMissing { to, text } => {
                if to.exists() {
                    eprintln!("    {} exists; left as it is", to.display());
                    continue;
                }
                parent(to)?;
                std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
                std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))?;
            }
            Action::Run { program, args } => step::run(Command::new(program).args(args))?,
            Action::Note(text) => eprintln!("    {text}"),
        }
    }
    Ok(())
}

pub fn run(args: &InstallArgs) -> anyhow::Result<()> {
    let build =
        ["build", "--locked", "--release", "-p", "skiff-control", "-p", "skiff-agent", "-p", "skiff-cni"];
    let layout = Layout {
        bin_dir: step::target_dir().join("release"),
        unit_src: step::workspace_root().join("deploy/systemd"),
        prefix: args.prefix.clone(),
        destdir: args.destdir.clone(),
        systemd_running: Path::new("/run/systemd/system").is_dir(),
    };
    // Planned before anything is built, so bad arguments cost no release build.
    let planned = plan(&layout, true)?;
    if args.dry_run {
        println!("run cargo {}", build.join(" "));
        for action in planned {
            println!("{action}");
        }
        return Ok(());
    }
    if args.destdir.is_none() {
        skiff_tests::require_root().context("installing into the system needs root (or give --destdir)")?;
    }
    step("build release binaries (skiff-control, skiff-agent, skiff, skiff-cni)", || {
        step::run(cargo().args(build))
    })?;
    let actions = plan(&layout, false)?;
    step("install binaries, units and settings", || apply(&actions))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A staging root with stub binaries built, and the layout installing them under `prefix`.
    fn staged(prefix: &str) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("tmp");
        let bin_dir = dir.path().join("build");
        std::fs::create_dir_all(&bin_dir).expect("bin dir");
        for (name, _, _) in BINARIES {
            std::fs::write(bin_dir.join(name), format!("#!/bin/sh\necho {name}\n")).expect("stub");
        }
        let layout = Layout {
            bin_dir,
            unit_src: step::workspace_root().join("deploy/systemd"),
            prefix: prefix.into(),
            destdir: Some(dir.path().join("root")),
            systemd_running: true,
        };
        (dir, layout)
    }

    #[test]
    fn installs_binaries_units_and_settings_under_the_prefix() {
        let (dir, layout) = staged("/opt/skiff");
        apply(&plan(&layout, false).expect("plan")).expect("install");
        let root = dir.path().join("root");
        for path in [
            "opt/skiff/bin/skiff-control",
            "opt/skiff/bin/skiff-agent",
            "opt/skiff/bin/skiff",
            "opt/cni/bin/skiff-cni",
        ] {
            let meta = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{path}");
        }
        let agent =
            std::fs::read_to_string(root.join("etc/systemd/system/skiff-agent.service")).expect("unit");
        assert!(agent.contains("ExecStart=/opt/skiff/bin/skiff-agent run"), "{agent}");
        assert!(!agent.contains("/usr/local/bin"), "every path follows the prefix: {agent}");
        let env = std::fs::read_to_string(root.join("etc/default/skiff-agent")).expect("env");
        assert!(env.contains("SKIFF_NODE_IP="), "{env}");
        assert!(root.join("etc/default/skiff-control").is_file());
    }

    #[test]
    fn settings_already_there_are_kept_and_units_replaced() {
        let (dir, layout) = staged("/usr/local");
        let root = dir.path().join("root");
        let env = root.join("etc/default/skiff-agent");
        let unit = root.join("etc/systemd/system/skiff-agent.service");
        for path in [&env, &unit] {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, "SKIFF_NODE_IP=192.0.2.7\n").expect("existing");
        }
        apply(&plan(&layout, false).expect("plan")).expect("install");
        assert_eq!(std::fs::read_to_string(&env).expect("env"), "SKIFF_NODE_IP=192.0.2.7\n");
        assert!(std::fs::read_to_string(&unit).expect("unit").contains("[Service]"), "the unit is replaced");
    }

    #[test]
    fn a_missing_binary_is_named_and_nothing_is_planned() {
        let (_dir, layout) = staged("/usr/local");
        std::fs::remove_file(layout.bin_dir.join("skiff-cni")).expect("rm");
        let err = plan(&layout, false).expect_err("skiff-cni is required").to_string();
        assert!(err.contains("skiff-cni is missing"), "{err}");
        // The optional CLI is skipped with a note instead.
        std::fs::write(layout.bin_dir.join("skiff-cni"), "").expect("stub");
        std::fs::remove_file(layout.bin_dir.join("skiff")).expect("rm");
        let actions = plan(&layout, false).expect("plan");
        assert!(actions.contains(&Action::Note("skiff was not built; not installed".into())), "{actions:?}");
    }

    #[test]
    fn daemon_reload_only_where_systemd_runs() {
        let (_dir, mut layout) = staged("/usr/local");
        layout.destdir = None;
        let reload = Action::Run { program: "systemctl".into(), args: vec!["daemon-reload".into()] };
        assert!(plan(&layout, false).expect("plan").contains(&reload));
        layout.systemd_running = false;
        let actions = plan(&layout, false).expect("plan");
        assert!(!actions.contains(&reload));
        assert!(
            matches!(actions.last(), Some(Action::Note(n)) if n.contains("skipped systemctl daemon-reload"))
        );
    }

    /// systemd's own checker over the installed units, in the staging root: every key known, every
    /// executable present where the unit says (after the prefix rewrite), dependencies resolvable.
    /// It reports unknown keys as warnings with exit 0, so any output fails the test.
    #[test]
    fn systemd_analyze_verify_accepts_the_installed_units() {
        let (dir, layout) = staged("/opt/skiff");
        apply(&plan(&layout, false).expect("plan")).expect("install");
        let root = dir.path().join("root");
        // The host's unit library (targets the units order against) and the shell ExecStartPre uses.
        let lib = root.join("usr/lib/systemd");
        std::fs::create_dir_all(&lib).expect("lib dir");
        let copied =
            Command::new("cp").arg("-a").arg("/usr/lib/systemd/system").arg(&lib).status().expect("cp");
        assert!(copied.success(), "copying /usr/lib/systemd/system");
        let sh = root.join("bin/sh");
        std::fs::create_dir_all(sh.parent().expect("parent")).expect("bin");
        std::fs::write(&sh, "").expect("sh stub");
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no"])
            .arg(format!("--root={}", root.display()))
            .args(UNITS.iter().map(|(unit, _, _)| format!("{UNIT_DIR}/{unit}")))
            .output()
            .expect("systemd-analyze is installed (cargo xtask setup: apt package systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify: {}\n{stderr}",
            out.status
        );

        // The checker is live: a misspelt key in the same place is reported.
        let unit = root.join("etc/systemd/system/skiff-agent.service");
        let text = std::fs::read_to_string(&unit).expect("unit");
        std::fs::write(&unit, text.replace("KillMode=process", "KilMode=process")).expect("typo");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no"])
            .arg(format!("--root={}", root.display()))
            .arg(format!("{UNIT_DIR}/skiff-agent.service"))
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Unknown key 'KilMode'"), "{stderr}");
    }
}
