//! The container runtime against a real, private containerd: the locally built busybox image
//! imported and unpacked, two containers sharing a pod's network namespace, exit codes, a stop
//! that escalates to SIGKILL after the grace period, and nothing left behind.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use skiff_agent::runtime::{
    Runtime, busybox,
    container::TaskState,
    image::LocalImage,
    oci::{self, Limits, SpecInput},
};
use skiff_tests::{Containerd, NetNs, poll_until};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio")
}

/// This run's cgroup parent, removed at the end.
fn cgroup_parent() -> String {
    format!("/skiff-test-{}", std::process::id())
}

fn spec(args: &[&str], netns: &Path, id: &str) -> serde_json::Value {
    oci::spec(&SpecInput {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        hostname: "pod",
        netns,
        cgroups_path: format!("{}/{id}", cgroup_parent()),
        mounts: vec![],
        limits: Limits { memory_bytes: Some(64 << 20), cpu_shares: Some(256), cpu_quota_us: None },
    })
}

#[test]
fn containers_run_in_a_shared_pod_namespace_and_leave_nothing_behind() {
    let daemon = Containerd::start("rt").expect("containerd");
    let work = tempfile::tempdir().expect("tmp");
    let pod = NetNs::new("rt-pod").expect("pod netns");
    runtime().block_on(async {
        let rt = Runtime::connect(&daemon.socket(), "skiff-test").await.expect("connect");
        let archive = work.path().join("busybox.tar");
        busybox::build_archive(Path::new(busybox::BUSYBOX), &archive).expect("image archive");
        assert_eq!(rt.import(&archive, None).await.expect("import"), [busybox::IMAGE]);
        assert_eq!(
            rt.import(&archive, None).await.expect("import again"),
            [busybox::IMAGE],
            "not idempotent"
        );
        let image: LocalImage =
            rt.resolve(busybox::IMAGE).await.expect("resolve").expect("the image is there");
        assert_eq!(image.config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
        assert!(rt.resolve("skiff.local/nope:1").await.expect("resolve").is_none());

        let labels = |c: &str| HashMap::from([("io.skiff.test".to_owned(), c.to_owned())]);
        let web_log = work.path().join("web.log");
        rt.create_container(
            "web",
            &image,
            &spec(&["httpd", "-f", "-p", "8080", "-h", "/var/www"], &pod.path(), "web"),
            labels("web"),
        )
        .await
        .expect("create web");
        rt.start("web", &web_log).await.expect("start web");
        let client_log = work.path().join("client.log");
        let fetch =
            "while ! wget -q -O - http://127.0.0.1:8080/; do sleep 0.1; done; echo fetched; sleep 600";
        rt.create_container(
            "client",
            &image,
            &spec(&["sh", "-c", fetch], &pod.path(), "client"),
            labels("client"),
        )
        .await
        .expect("create client");
        rt.start("client", &client_log).await.expect("start client");
        // The second container reaches the first over the pod's loopback.
        poll_until("the client fetched the page", Duration::from_secs(10), || {
            std::fs::read_to_string(&client_log).ok().filter(|l| l.contains("skiff") && l.contains("fetched"))
        })
        .expect("client output");
        // And the pod's namespace is the one the test made.
        let page = pod
            .run(|| -> std::io::Result<String> {
                let mut s = TcpStream::connect("127.0.0.1:8080")?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })
            .expect("netns")
            .expect("http");
        assert!(page.contains("skiff"), "{page}");
        assert!(matches!(rt.task("web").await.expect("task"), Some((TaskState::Running, pid)) if pid > 0));

        // httpd as PID 1 ignores SIGTERM: the stop escalates to SIGKILL after the grace period.
        let started = Instant::now();
        let exit = rt.stop("web", 15, Duration::from_millis(500)).await.expect("stop").expect("a task");
        assert!(started.elapsed() >= Duration::from_millis(500), "no grace period");
        assert_eq!(exit.code, 137, "killed");

        rt.create_container(
            "exit3",
            &image,
            &spec(&["sh", "-c", "exit 3"], &pod.path(), "exit3"),
            labels("exit3"),
        )
        .await
        .expect("create");
        rt.start("exit3", &work.path().join("exit3.log")).await.expect("start");
        assert_eq!(rt.wait("exit3").await.expect("wait").code, 3);

        for id in ["web", "client", "exit3"] {
            rt.remove(id).await.expect("remove");
            rt.remove(id).await.expect("remove twice");
        }
        assert!(rt.containers(&[]).await.expect("list").is_empty());
        let left: Vec<String> = rt
            .snapshots()
            .await
            .expect("snapshots")
            .into_iter()
            .filter(|k| !k.starts_with("sha256:"))
            .collect();
        assert!(left.is_empty(), "container snapshots left: {left:?}");
        skiff_agent::runtime::cgroup::remove(&cgroup_parent()).expect("the pod cgroup is empty");
    });
    drop(daemon);
}

#[test]
fn skiff_image_import_puts_an_archive_into_containerd() {
    let daemon = Containerd::start("rt-cli").expect("containerd");
    let work = tempfile::tempdir().expect("tmp");
    let archive = work.path().join("busybox.tar");
    let skiff = env!("CARGO_BIN_EXE_skiff");
    let built = std::process::Command::new(skiff)
        .args(["image", "build-busybox"])
        .arg(&archive)
        .output()
        .expect("skiff");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let import = |path: &Path| {
        std::process::Command::new(skiff)
            .args(["image", "import"])
            .arg(path)
            .arg("--containerd")
            .arg(daemon.socket())
            .args(["--namespace", "cli-test"])
            .output()
            .expect("skiff")
    };
    let out = import(&archive);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("imported {}", busybox::IMAGE));
    runtime().block_on(async {
        let rt = Runtime::connect(&daemon.socket(), "cli-test").await.expect("connect");
        assert!(rt.resolve(busybox::IMAGE).await.expect("resolve").is_some());
    });
    // Not an archive: one line, a non-zero exit.
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").expect("junk");
    let out = import(&junk);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("skiff: "), "{err}");
}
