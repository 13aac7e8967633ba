//! Crash-safety exerciser for the embedded store: writes `count` objects with `concurrency`
//! writers in flight and prints `acked <key> <revision>` for every acknowledged write. The
//! store's crash test SIGKILLs it mid-burst and checks that every acknowledged write survived.

use std::{io::Write as _, path::PathBuf};

use skiff_control::store::{
    Store as _,
    embedded::{EmbeddedStore, Options},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count), Some(concurrency)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: skiff-store-burst <store file> <count> <concurrency>");
        std::process::exit(2);
    };
    let (Ok(count), Ok(concurrency)) = (count.parse::<usize>(), concurrency.parse::<usize>()) else {
        eprintln!("skiff-store-burst: count and concurrency must be numbers");
        std::process::exit(2);
    };
    let store = match EmbeddedStore::open(&PathBuf::from(path), Options::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skiff-store-burst: {e}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff-store-burst: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let per_task = count.div_ceil(concurrency);
        for t in 0..concurrency {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let key = format!("/burst/{t:04}-{i:06}");
                    let value = format!("value of {key}").into_bytes();
                    match store.create(&key, value).await {
                        Ok(o) => {
                            let _ = tx.send(format!("acked {key} {}", o.mod_revision));
                        }
                        Err(e) => {
                            let _ = tx.send(format!("failed {key} {e}"));
                        }
                    }
                }
            });
        }
        drop(tx);
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            // Printed only after the store acknowledged the write.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
}
