//! Containers and their tasks: a writable snapshot on the image's layer stack, the container
//! record (spec, labels), and the task (runc via the shim) with its output in a log file.

use std::{collections::HashMap, path::Path, time::Duration};

use containerd_client::{
    services::v1::{
        Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteProcessRequest,
        DeleteTaskRequest, ExecProcessRequest, GetRequest as GetTaskRequest, KillRequest,
        ListContainersRequest, StartRequest, WaitRequest,
        container::Runtime as ContainerRuntime,
        snapshots::{ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest},
    },
    tonic::Code,
    types::v1::Status as TaskStatus,
};
use prost_types::Any;

use super::{Result, Runtime, RuntimeError, SNAPSHOTTER, call, gone_ok, image::LocalImage};

const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC: &str = "io.containerd.runc.v2";

/// What containerd knows of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: HashMap<String, String>,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    Stopped { exit_code: u32 },
    Paused,
    Unknown,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    /// Unix seconds.
    pub at: i64,
}

impl Runtime {
    /// Creates container `id` from `image` with `spec` (see [`super::oci`]) and `labels`: a
    /// writable snapshot on the image, then the container record, under a lease until the
    /// record references the snapshot.
    pub async fn create_container(
        &self,
        id: &str,
        image: &LocalImage,
        spec: &serde_json::Value,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let lease = self.lease("create", Duration::from_secs(600)).await?;
        let result = self.create_leased(id, image, spec, labels, &lease).await;
        let released = self.release(&lease).await;
        result?;
        released
    }

    async fn create_leased(
        &self,
        id: &str,
        image: &LocalImage,
        spec: &serde_json::Value,
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<()> {
        let prepare = self.request(
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.into(),
                parent: image.top_chain.clone(),
                labels: HashMap::new(),
            },
            Some(lease),
        );
        match self.client().snapshots().prepare(prepare).await {
            Ok(_) => {}
            // Left by a create that died after preparing: reuse it.
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(call("Snapshots.Prepare")(s)),
        }
        let spec = serde_json::to_vec(spec)
            .map_err(|e| RuntimeError::Container { id: id.into(), reason: e.to_string() })?;
        let container = Container {
            id: id.into(),
            labels,
            image: image.name.clone(),
            runtime: Some(ContainerRuntime { name: RUNC.into(), options: None }),
            spec: Some(Any { type_url: SPEC_TYPE.into(), value: spec }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.into(),
            ..Default::default()
        };
        let req = self.request(CreateContainerRequest { container: Some(container) }, Some(lease));
        self.client().containers().create(req).await.map(drop).map_err(call("Containers.Create"))
    }

    /// Starts container `id`'s task, its stdout and stderr appended to `log` (created if
    /// missing); returns the task's pid.
    pub async fn start(&self, id: &str, log: &Path) -> Result<u32> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| RuntimeError::Io { what: format!("creating {}", dir.display()), source })?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| RuntimeError::Io { what: format!("creating {}", log.display()), source })?;
        let mounts = self
            .client()
            .snapshots()
            .mounts(self.request(MountsRequest { snapshotter: SNAPSHOTTER.into(), key: id.into() }, None))
            .await
            .map_err(call("Snapshots.Mounts"))?
            .into_inner()
            .mounts;
        let log = log.display().to_string();
        let create = CreateTaskRequest {
            container_id: id.into(),
            rootfs: mounts,
            stdout: log.clone(),
            stderr: log,
            ..Default::default()
        };
        self.client().tasks().create(self.request(create, None)).await.map_err(call("Tasks.Create"))?;
        let started = self
            .client()
            .tasks()
            .start(self.request(StartRequest { container_id: id.into(), exec_id: String::new() }, None))
            .await
            .map_err(call("Tasks.Start"))?;
        Ok(started.into_inner().pid)
    }

    /// The state of container `id`'s task; `None` without a task.
    pub async fn task(&self, id: &str) -> Result<Option<(TaskState, u32)>> {
        let req = self.request(GetTaskRequest { container_id: id.into(), exec_id: String::new() }, None);
        let process = match self.client().tasks().get(req).await {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => return Ok(None),
            Err(s) => return Err(call("Tasks.Get")(s)),
        };
        Ok(process.map(|p| {
            let state = match TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown) {
                TaskStatus::Created => TaskState::Created,
                TaskStatus::Running | TaskStatus::Pausing => TaskState::Running,
                TaskStatus::Stopped => TaskState::Stopped { exit_code: p.exit_status },
                TaskStatus::Paused => TaskState::Paused,
                TaskStatus::Unknown => TaskState::Unknown,
            };
            (state, p.pid)
        }))
    }

    /// Sends `signal` to the task (to every process of the container with `all`); a task that
    /// already ended is not an error.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let req =
            self.request(KillRequest { container_id: id.into(), exec_id: String::new(), signal, all }, None);
        match self.client().tasks().kill(req).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(call("Tasks.Kill")(s)),
        }
    }

    /// Waits for the task to end.
    pub async fn wait(&self, id: &str) -> Result<Exit> {
        let req = self.request(WaitRequest { container_id: id.into(), exec_id: String::new() }, None);
        let exit = self.client().tasks().wait(req).await.map_err(call("Tasks.Wait"))?.into_inner();
        Ok(Exit { code: exit.exit_status, at: exit.exited_at.map_or(0, |t| t.seconds) })
    }

    /// Stops the task: `signal`, up to `grace` for it to end, then SIGKILL to every process of
    /// the container. Returns how it ended (`None` if there was no task).
    pub async fn stop(&self, id: &str, signal: u32, grace: Duration) -> Result<Option<Exit>> {
        match self.task(id).await? {
            None => return Ok(None),
            Some((TaskState::Stopped { exit_code }, _)) => return Ok(Some(Exit { code: exit_code, at: 0 })),
            Some(_) => {}
        }
        self.kill(id, signal, false).await?;
        if let Ok(exit) = tokio::time::timeout(grace, self.wait(id)).await {
            return exit.map(Some);
        }
        self.kill(id, nix::sys::signal::Signal::SIGKILL as u32, true).await?;
        self.wait(id).await.map(Some)
    }

    /// Deletes the task (which must have ended); returns its exit code if there was one.
    pub async fn delete_task(&self, id: &str) -> Result<Option<u32>> {
        let req = self.request(DeleteTaskRequest { container_id: id.into() }, None);
        match self.client().tasks().delete(req).await {
            Ok(r) => Ok(Some(r.into_inner().exit_status)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call("Tasks.Delete")(s)),
        }
    }

    /// Removes container `id` entirely: its task (killed if still running), the container
    /// record and its snapshot. Each part may already be gone.
    pub async fn remove(&self, id: &str) -> Result<()> {
        if let Some((state, _)) = self.task(id).await?
            && !matches!(state, TaskState::Stopped { .. })
        {
            self.kill(id, nix::sys::signal::Signal::SIGKILL as u32, true).await?;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
        }
        self.delete_task(id).await?;
        let req = self.request(DeleteContainerRequest { id: id.into() }, None);
        gone_ok(self.client().containers().delete(req).await, "Containers.Delete")?;
        self.remove_snapshot(id).await
    }

    /// Every container in this namespace whose labels include all of `filter`.
    pub async fn containers(&self, filter: &[(&str, &str)]) -> Result<Vec<ContainerInfo>> {
        let filters =
            filter.iter().map(|(k, v)| format!("labels.\"{k}\"=={v}")).collect::<Vec<_>>().join(",");
        let req = self.request(
            ListContainersRequest { filters: if filters.is_empty() { vec![] } else { vec![filters] } },
            None,
        );
        let list = self.client().containers().list(req).await.map_err(call("Containers.List"))?.into_inner();
        Ok(list
            .containers
            .into_iter()
            .map(|c| ContainerInfo { id: c.id, image: c.image, labels: c.labels })
            .collect())
    }
}

impl Runtime {
    /// Every snapshot key (for leak checks: a removed container leaves none behind).
    pub async fn snapshots(&self) -> Result<Vec<String>> {
        use futures::StreamExt as _;
        let req =
            self.request(ListSnapshotsRequest { snapshotter: SNAPSHOTTER.into(), filters: vec![] }, None);
        let mut stream =
            self.client().snapshots().list(req).await.map_err(call("Snapshots.List"))?.into_inner();
        let mut keys = Vec::new();
        while let Some(page) = stream.next().await {
            keys.extend(page.map_err(call("Snapshots.List"))?.info.into_iter().map(|i| i.name));
        }
        Ok(keys)
    }
}

impl Runtime {
    /// Runs `command` inside container `id`'s running task (as a probe does) and returns its exit
    /// code; its output is discarded.
    pub async fn exec(&self, id: &str, command: &[String]) -> Result<u32> {
        if command.is_empty() {
            return Err(RuntimeError::Container { id: id.into(), reason: "an empty command".into() });
        }
        let exec_id = format!("exec-{}", jiff::Timestamp::now().as_nanosecond());
        let process = serde_json::json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": command,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
        });
        let spec = Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process)
                .map_err(|e| RuntimeError::Container { id: id.into(), reason: e.to_string() })?,
        };
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.clone(),
            spec: Some(spec),
            ..Default::default()
        };
        self.client().tasks().exec(self.request(req, None)).await.map_err(call("Tasks.Exec"))?;
        let result = async {
            let start = StartRequest { container_id: id.into(), exec_id: exec_id.clone() };
            self.client().tasks().start(self.request(start, None)).await.map_err(call("Tasks.Start"))?;
            let wait = WaitRequest { container_id: id.into(), exec_id: exec_id.clone() };
            let exit =
                self.client().tasks().wait(self.request(wait, None)).await.map_err(call("Tasks.Wait"))?;
            Ok(exit.into_inner().exit_status)
        }
        .await;
        let delete = DeleteProcessRequest { container_id: id.into(), exec_id };
        let _ = self.client().tasks().delete_process(self.request(delete, None)).await;
        result
    }
}
