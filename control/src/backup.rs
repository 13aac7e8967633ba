//! Backups of a cluster's state. The embedded store's snapshot is every stored key with its
//! revisions and the store's revision, taken consistently from a running API server
//! (`GET /skiff/v1/snapshot`, cluster admins only) and written as text: a magic line, a header
//! line, then one JSON line per object (value in base64). Restoring writes a fresh store with the
//! same keys and revisions, so resourceVersions, ClusterIPs, node ports and UIDs come back as
//! they were and agents' watches resume. An etcd-backed cluster is backed up with etcd's own
//! snapshot (the maintenance API) and restored with `etcdctl snapshot restore`.

use std::io::{BufRead, Write};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::store::{Object, Revision};

/// The first line of an embedded-store snapshot.
pub const MAGIC: &str = "skiff-snapshot/v1";
/// How far a restored embedded store's revision jumps past the snapshot's: every resourceVersion
/// a client saw before the restore is then older than the restored store's history, so its
/// watch gets a 410 and it re-lists, instead of resuming past events it would never see.
pub const RESTORE_BUMP: Revision = 1_000_000;

/// The path a running API server serves its snapshot on.
pub const PATH: &str = "/skiff/v1/snapshot";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    revision: Revision,
    objects: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    key: String,
    create: Revision,
    #[serde(rename = "mod")]
    modified: Revision,
    value: String,
}

/// Writes `objects` at `revision` as a snapshot.
pub fn write(out: &mut impl Write, revision: Revision, objects: &[Object]) -> anyhow::Result<()> {
    writeln!(out, "{MAGIC}")?;
    serde_json::to_writer(&mut *out, &Header { revision, objects: objects.len() })?;
    writeln!(out)?;
    for o in objects {
        let line = Line {
            key: o.key.clone(),
            create: o.create_revision,
            modified: o.mod_revision,
            value: base64::engine::general_purpose::STANDARD.encode(&o.value),
        };
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Whether `head` (a file's first bytes) is an embedded-store snapshot.
pub fn is_snapshot(head: &[u8]) -> bool {
    head.starts_with(MAGIC.as_bytes())
}

/// Reads a snapshot: the revision and every object, checked for completeness.
pub fn read(input: impl BufRead) -> anyhow::Result<(Revision, Vec<Object>)> {
    let mut lines = input.lines();
    let magic = lines.next().context("the snapshot is empty")??;
    if magic != MAGIC {
        bail!("not a skiff snapshot (it starts with {:?})", magic.chars().take(40).collect::<String>());
    }
    let header: Header = serde_json::from_str(&lines.next().context("the snapshot has no header")??)
        .context("the snapshot's header")?;
    let mut objects = Vec::with_capacity(header.objects);
    for (n, line) in lines.enumerate() {
        let line: Line =
            serde_json::from_str(&line?).with_context(|| format!("object {n} of the snapshot"))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(&line.value)
            .with_context(|| format!("the value of {}", line.key))?;
        if line.modified > header.revision || line.create > line.modified {
            bail!("{} has revisions beyond the snapshot's", line.key);
        }
        objects.push(Object {
            key: line.key,
            value,
            create_revision: line.create,
            mod_revision: line.modified,
        });
    }
    if objects.len() != header.objects {
        bail!("the snapshot is cut short: {} of {} objects", objects.len(), header.objects);
    }
    Ok((header.revision, objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let objects = vec![
            Object { key: "/a".into(), value: b"{\"x\":1}".to_vec(), create_revision: 1, mod_revision: 3 },
            Object { key: "/b".into(), value: vec![0, 255, 10], create_revision: 2, mod_revision: 2 },
        ];
        let mut text = Vec::new();
        write(&mut text, 4, &objects).expect("write");
        assert!(is_snapshot(&text));
        assert_eq!(read(text.as_slice()).expect("read"), (4, objects));
        let cut = &text[..text.len() - 5];
        assert!(read(cut).is_err(), "a truncated snapshot is refused");
        let short: Vec<u8> = text.split(|b| *b == b'\n').take(3).collect::<Vec<_>>().join(&b'\n');
        assert!(read(short.as_slice()).expect_err("missing objects").to_string().contains("cut short"));
        assert!(read(&b"PK\x03\x04"[..]).is_err());
    }
}
