//! The OCI runtime spec of a container: the image's process settings overridden by the pod's,
//! the pod's network namespace, private pid/ipc/uts/mount namespaces, the default capability set,
//! the usual pseudo-filesystems, volumes as bind mounts, and resources as cgroup limits.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// One mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// cgroup limits (from the container's resources).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    /// CPU shares (relative weight; from requests.cpu: 1024 per core, at least 2).
    pub cpu_shares: Option<u64>,
    /// CPU quota per 100 ms period (from limits.cpu).
    pub cpu_quota_us: Option<i64>,
}

/// Everything the spec is built from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub hostname: &'a str,
    pub netns: &'a Path,
    pub cgroups_path: String,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
}

const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub fn spec(input: &SpecInput<'_>) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &input.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "rprivate", mode]}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(bytes) = input.limits.memory_bytes {
        resources["memory"] = json!({"limit": bytes});
    }
    if input.limits.cpu_shares.is_some() || input.limits.cpu_quota_us.is_some() {
        let mut cpu = json!({});
        if let Some(shares) = input.limits.cpu_shares {
            cpu["shares"] = json!(shares);
        }
        if let Some(quota) = input.limits.cpu_quota_us {
            cpu["quota"] = json!(quota);
            cpu["period"] = json!(100_000);
        }
        resources["cpu"] = cpu;
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": input.uid, "gid": input.gid},
            "args": input.args,
            "env": input.env,
            "cwd": if input.cwd.is_empty() { "/" } else { input.cwd.as_str() },
            "capabilities": {"bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES},
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": input.netns},
            ],
            "cgroupsPath": input.cgroups_path,
            "resources": resources,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    })
}
