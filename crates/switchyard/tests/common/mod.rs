//! Helpers shared by the tests that run the real binary.
//!
//! Each test binary compiles its own copy of this module and uses only part of it (cli.rs only
//! `TempFile`), so the items some binary leaves unused carry `#[allow(dead_code)]`.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use switchyard_testkit::probe::{http_get, metric, peak_rss_bytes};

/// A config file in the temp dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("switchyard-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The router process (`switchyard run`); SIGKILLed on drop, so that a failing test leaves
/// no router behind.
#[allow(dead_code)]
pub struct Router(pub Child);

#[allow(dead_code)]
impl Router {
    /// Starts `switchyard run --config <config>`, logging errors only, its output discarded.
    /// `instance` sets `kafka.group_instance_id` (static membership), as deploy/ sets it from
    /// the pod name.
    pub fn start(config: &str, instance: Option<&str>) -> Router {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["run", "--config", config])
            .env("SWITCHYARD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(id) = instance {
            cmd.env("SWITCHYARD__KAFKA__GROUP_INSTANCE_ID", id);
        }
        Router(cmd.spawn().unwrap())
    }

    /// Sends SIGTERM: the graceful stop.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, on a blocking thread rather than the runtime's.
    pub async fn exited(mut self) -> ExitStatus {
        tokio::task::spawn_blocking(move || self.0.wait())
            .await
            .unwrap()
            .unwrap()
    }

    /// SIGKILL, as a crash: no flush, no commit.
    pub fn kill_nine(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How often a fake received each event id, the id read at the JSON pointer `path` of each
/// item it received.
#[allow(dead_code)]
pub fn counts(items: Vec<serde_json::Value>, path: &str) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in items {
        if let Some(id) = v.pointer(path).and_then(|x| x.as_str()) {
            *m.entry(id.to_string()).or_default() += 1;
        }
    }
    m
}

/// What the broker has committed for `group` on partitions `0..partitions` of `topic`, read
/// by a client outside the group (it does not join, so the router's member is undisturbed).
#[allow(dead_code)]
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = {
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect()
        // The list is dropped before the consumer: the other order hangs (kafka-testing.md).
    };
    drop(consumer);
    offsets
}

/// Peak resident memory of `pid`, in MiB; 0 where it cannot be read.
#[allow(dead_code)]
pub fn peak_rss_mib(pid: u32) -> f64 {
    peak_rss_bytes(pid).map_or(0.0, |b| b as f64 / (1 << 20) as f64)
}

/// A loopback address free right now, for a router's admin server: the test must know it to
/// scrape `/metrics`, so `127.0.0.1:0` will not do.
#[allow(dead_code)]
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A counter or gauge of the router at `admin`, 0 when absent.
#[allow(dead_code)]
pub async fn read_metric(admin: &str, name: &str) -> f64 {
    let (_, text) = http_get(admin, "/metrics").await;
    metric(&text, name).unwrap_or(0.0)
}
