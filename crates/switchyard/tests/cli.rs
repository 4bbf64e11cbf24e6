//! The `switchyard` binary as an operator runs it: `validate` exit codes and messages,
//! environment overrides, and `run` shutting down cleanly on SIGTERM.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::io::{BufRead, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use switchyard_testkit::{Broker, FakeHec, Generator};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const TOKEN: &str = "0a1b2c3d-secret-token-value";

mod common;
use common::TempFile;

fn switchyard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("SWITCHYARD_LOG_FORMAT", "plain");
    for (k, _) in REPO_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// What the repo's connectors.toml reads from the environment.
const REPO_ENV: [(&str, &str); 5] = [
    ("SPLUNK_HEC_TOKEN", TOKEN),
    ("DD_API_KEY", "dd-key-value"),
    ("NEW_RELIC_ACCOUNT_ID", "1234567"),
    ("NEW_RELIC_LICENSE_KEY", "nr-license-value"),
    ("OTLP_API_KEY", "otlp-api-key-value"),
];

fn repo_config() -> String {
    format!("{}/../../connectors.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_accepts_the_repo_config() {
    let out = switchyard(&["validate", "--config", &repo_config()], &REPO_ENV);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok"));
    // Each connector with its kind and the batch limits in force.
    assert!(
        stdout.contains("  dz-connector-splunk: splunk_hec, batches of up to 1000 events"),
        "{stdout}"
    );
}

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let file = TempFile::new(
        "bad",
        r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.splunk]
kind = "splunk_hec"
endpoint = "ftp://nowhere"
token = "${SWITCHYARD_TEST_UNSET_VAR}"
[connectors.splunk.batch]
max_bytes = 0
[connectors.other]
kind = "smoke_signals"
"#,
    );
    let out = switchyard(&["validate", "--config", file.path()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "connectors.splunk.token: environment variable SWITCHYARD_TEST_UNSET_VAR is not set",
        "connectors.splunk.endpoint: scheme must be http or https",
        "connectors.splunk.batch.max_bytes: must be at least 1",
        "connectors.other.kind: unknown kind \"smoke_signals\"",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
}

#[test]
fn validate_shows_hec_indexer_acknowledgement_and_checks_its_keys() {
    let config = |ack: &str| {
        format!(
            r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.splunk]
kind = "splunk_hec"
endpoint = "https://splunk:8088"
token = "${{SPLUNK_HEC_TOKEN}}"
{ack}
"#
        )
    };
    let on = TempFile::new("ack-on", &config("ack = true\nack_max_pending = 50"));
    let out = switchyard(&["validate", "--config", on.path()], &REPO_ENV);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("indexer acknowledgement: polled every 10 s, up to 50 ack ids pending, resent after 300 s"),
        "{stdout}"
    );
    let off = TempFile::new("ack-off", &config(""));
    let out = switchyard(&["validate", "--config", off.path()], &REPO_ENV);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("acknowledgement"));

    let bad = TempFile::new(
        "ack-bad",
        &config("ack = true\nack_poll_interval_secs = 30\nack_timeout_secs = 20"),
    );
    let out = switchyard(&["validate", "--config", bad.path()], &REPO_ENV);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "connectors.splunk.ack_timeout_secs: must be longer than ack_poll_interval_secs (30)"
        ),
        "{err}"
    );
}

#[test]
fn environment_overrides_apply_and_secrets_are_not_echoed() {
    let out = switchyard(
        &["validate", "--config", &repo_config()],
        &[
            REPO_ENV.as_slice(),
            &[(
                "SWITCHYARD__CONNECTORS__DZ-CONNECTOR-SPLUNK__ENDPOINT",
                "not a url",
            )],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connectors.dz-connector-splunk.endpoint"),
        "{err}"
    );
    let out_text = String::from_utf8_lossy(&out.stdout);
    for (_, secret) in &REPO_ENV[..2] {
        assert!(!err.contains(secret) && !out_text.contains(secret));
    }
}

#[test]
fn all_digit_overrides_are_read_as_strings() {
    // The environment source parses "1000001" as a number; an account id or key is a string.
    let out = switchyard(
        &["validate", "--config", &repo_config()],
        &[
            REPO_ENV.as_slice(),
            &[
                (
                    "SWITCHYARD__CONNECTORS__DZ-CONNECTOR-NEWRELIC__ACCOUNT_ID",
                    "1000001",
                ),
                (
                    "SWITCHYARD__CONNECTORS__DZ-CONNECTOR-DATADOG__API_KEY",
                    "424242",
                ),
            ],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn validate_shows_a_connectors_sampling_and_field_selection() {
    let file = TempFile::new(
        "pipes",
        r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.splunk]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "${SPLUNK_HEC_TOKEN}"
sample_rate = 0.25
fields = { exclude = ["user_details.client_ip"], rename = { "event.type" = "event_type" }, add = { env = "prod" } }
"#,
    );
    let out = switchyard(
        &["validate", "--config", file.path()],
        &[("SPLUNK_HEC_TOKEN", "t")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "    samples 25% of sessions by user_details.content_session_id",
        "    sends selected fields: exclude [user_details.client_ip], rename [event.type -> event_type], add [env]",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn validate_prints_warnings_and_still_exits_0() {
    let file = TempFile::new(
        "warnings",
        r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.splunk]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "literal-token-in-the-file"
[connectors.fh]
kind = "kinesis_firehose"
delivery_stream = "s"
endpoint_url = "http://localhost:4566"
"#,
    );
    let out = switchyard(&["validate", "--config", file.path()], &[]);
    let (err, stdout) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    for line in [
        "warning: connectors.splunk.token: is a secret written in the file",
        "warning: connectors.fh.endpoint_url: is deprecated; call it endpoint",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    assert!(!err.contains("literal-token") && !stdout.contains("literal-token"));

    // With an override the file's value is never used, so there is nothing to warn about.
    let out = switchyard(
        &["validate", "--config", file.path()],
        &[(
            "SWITCHYARD__CONNECTORS__SPLUNK__TOKEN",
            "from-the-environment",
        )],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("connectors.splunk.token"), "{err}");
    assert!(err.contains("warning: connectors.fh.endpoint_url"), "{err}");
}

#[test]
fn a_connector_disabled_by_an_override_needs_no_variables() {
    let without_dd_key: Vec<(&str, &str)> = REPO_ENV
        .iter()
        .filter(|(k, _)| *k != "DD_API_KEY")
        .copied()
        .collect();
    let out = switchyard(&["validate", "--config", &repo_config()], &without_dd_key);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // Once, as the thing to fix, not again as the empty key it leaves behind.
    assert_eq!(
        err.matches("connectors.dz-connector-datadog.api_key")
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains(
            "connectors.dz-connector-datadog.api_key: environment variable DD_API_KEY is not set"
        ),
        "{err}"
    );

    let disabled = [
        without_dd_key.as_slice(),
        &[(
            "SWITCHYARD__CONNECTORS__DZ-CONNECTOR-DATADOG__ENABLED",
            "false",
        )],
    ]
    .concat();
    let out = switchyard(&["validate", "--config", &repo_config()], &disabled);
    let (err, stdout) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    let summary = stdout.lines().next().unwrap_or_default();
    let enabled = summary.split("enabled:").nth(1).unwrap_or_default();
    assert!(
        enabled.contains("dz-connector-splunk") && !enabled.contains("dz-connector-datadog"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dz-connector-datadog: datadog_logs (disabled)"),
        "{stdout}"
    );

    // Replay runs the connector it is given even when disabled, so it needs the variables;
    // it refuses before reaching for the (unreachable) brokers.
    let out = switchyard(
        &[
            "replay",
            "--config",
            &repo_config(),
            "--connector",
            "dz-connector-datadog",
        ],
        &disabled,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DD_API_KEY is not set"), "{err}");
}

#[test]
fn run_logs_the_warnings_at_startup() {
    let file = TempFile::new(
        "run-warnings",
        r#"
[kafka]
brokers = "127.0.0.1:9"
topics = ["t"]
group_id = "g"
[admin]
enabled = false
[connectors.splunk]
kind = "splunk_hec"
endpoint = "http://127.0.0.1:9"
token = "literal-token-in-the-file"
[connectors.fh]
kind = "kinesis_firehose"
enabled = false
delivery_stream = "s"
endpoint_url = "http://127.0.0.1:9"
"#,
    );
    let mut child = Command::new(BIN)
        .args(["run", "--config", file.path()])
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    let mut missing = vec!["connectors.splunk.token", "connectors.fh.endpoint_url"];
    while !missing.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}; still missing {missing:?} in:\n{logs:#?}"));
        let log: serde_json::Value = serde_json::from_str(&line).unwrap();
        if log["level"] == "WARN" {
            missing.retain(|key| log["key"] != *key);
        }
        logs.push(line);
    }
    assert!(
        !logs.iter().any(|l| l.contains("literal-token")),
        "{logs:#?}"
    );
}

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_delivers_and_shuts_down_cleanly_on_sigterm() {
    let broker = Broker::mock().unwrap();
    broker.create_topic("qoe", 2).unwrap();
    let hec = FakeHec::builder(TOKEN).start().await.unwrap();
    let file = TempFile::new(
        "run",
        &format!(
            r#"
[kafka]
brokers = "{}"
topics = ["qoe"]
group_id = "cli"
commit_interval_ms = 60000
[kafka.options]
"session.timeout.ms" = "6000"
[router]
shutdown_timeout_secs = 20
[admin]
bind = "127.0.0.1:0"
[connectors.dz-connector-splunk]
kind = "splunk_hec"
endpoint = "{}"
token = "${{SPLUNK_HEC_TOKEN}}"
[connectors.dz-connector-splunk.batch]
max_linger_ms = 20
"#,
            broker.bootstrap_servers(),
            hec.url()
        ),
    );
    let mut g = Generator::new("cli", 3).connector_lists(&["dz-connector-splunk"]);
    broker.produce("qoe", (0..400).map(|i| (i % 2, g.next_event().1)));

    let child = Command::new(BIN)
        .args(["run", "--config", file.path()])
        .env("SPLUNK_HEC_TOKEN", TOKEN)
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    assert!(hec.wait_for_received(400, Duration::from_secs(120)).await);

    // The periodic commit is a minute away: only the shutdown path can commit now.
    let status = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = running.0.wait().unwrap();
        let mut logs = String::new();
        running
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "exit {:?}\n{}", exit.0, exit.1);
    assert!(exit.1.contains("signal received"), "{}", exit.1);
    assert!(!exit.1.contains(TOKEN), "the token leaked into the logs");
    for line in exit.1.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "cli")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("qoe", 0);
    tpl.add_partition("qoe", 1);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offsets: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    drop(committed);
    assert_eq!(
        offsets,
        [Offset::Offset(200), Offset::Offset(200)],
        "shutdown committed everything delivered"
    );
    assert_eq!(hec.received_count(), 400);
}

/// A directory of the test's own for tenant files, removed when dropped.
struct TenantDir(std::path::PathBuf);

impl TenantDir {
    fn new(test: &str) -> TenantDir {
        let dir =
            std::env::temp_dir().join(format!("switchyard-cli-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TenantDir(dir)
    }
}

impl Drop for TenantDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tenants_lists_each_customers_instances_with_secrets_redacted() {
    let dir = TenantDir::new("tenants");
    std::fs::write(
        dir.0.join("acme.toml"),
        "[connectors.hec]\nendpoint = \"https://splunk.acme:8088\"\ntoken = \"${ACME_HEC_TOKEN}\"\n",
    )
    .unwrap();
    let config = TempFile::new(
        "tenants",
        &format!(
            "[kafka]\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n\
             [connectors.hec]\nkind = \"splunk_hec\"\nendpoint = \"https://hec:8088\"\ntoken = \"${{HEC_TOKEN}}\"\n\
             [tenants]\ndirectory = \"{}\"\n",
            dir.0.display()
        ),
    );
    let env = [
        ("HEC_TOKEN", "default-hec-token"),
        ("ACME_HEC_TOKEN", "acme-hec-secret"),
    ];
    let out = switchyard(&["tenants", "--config", config.path()], &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 tenant(s)"), "{stdout}");
    assert!(stdout.contains("acme ("), "{stdout}");
    assert!(
        stdout.contains("  hec: splunk_hec") && stdout.contains("https://splunk.acme:8088"),
        "{stdout}"
    );
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("acme-hec-secret"), "{stdout}");

    // Without the tenant's variable, the file and key are named and the exit code is 2.
    let out = switchyard(&["validate", "--config", config.path()], &env[..1]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains(
            "acme.toml: connectors.hec.token: environment variable ACME_HEC_TOKEN is not set"
        ),
        "{stderr}"
    );
}

/// The running binary reloads on SIGHUP, and on a change in the tenant directory; a file that
/// does not load is refused naming the file and the key, and the process keeps running.
#[test]
fn run_reloads_on_sighup_and_on_a_changed_tenant_file() {
    let dir = TenantDir::new("reload");
    let acme = dir.0.join("acme.toml");
    std::fs::write(&acme, "[connectors.hec]\nindex = \"acme\"\n").unwrap();
    let config = TempFile::new(
        "reload",
        &format!(
            "[kafka]\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n\
             [admin]\nenabled = false\n\
             [connectors.hec]\nkind = \"splunk_hec\"\nendpoint = \"https://hec:8088\"\ntoken = \"${{HEC_TOKEN}}\"\n\
             health_check = {{ enabled = false }}\n\
             [tenants]\ndirectory = \"{}\"\n",
            dir.0.display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.path()])
        .env("HEC_TOKEN", "default-hec-token")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Anything else (a panic) is kept as text, to be shown if the test fails.
            let log = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
            if tx.send(log).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &dyn Fn(&serde_json::Value) -> bool| {
        let mut seen = Vec::new();
        loop {
            let log = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}; saw:\n{seen:#?}"));
            if what(&log) {
                return log;
            }
            seen.push(log);
        }
    };
    wait_for(&|l| l["message"] == "switchyard running");

    let hup = Command::new("kill")
        .args(["-HUP", &running.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let log = wait_for(&|l| l["message"] == "settings reloaded");
    assert_eq!(log["trigger"], "Signal", "{log}");

    // A broken tenant file: refused with its file and key; the process goes on.
    std::fs::write(&acme, "[connectors.hec]\nindex = 7\n").unwrap();
    let refused = wait_for(&|l| l["message"] == "settings not reloaded");
    assert!(
        refused["key"]
            .as_str()
            .is_some_and(|k| k.ends_with("acme.toml: connectors.hec.index")),
        "{refused}"
    );
    wait_for(&|l| l["message"] == "the new settings were refused; the running ones stay");
    // Fixed: the change alone reloads it.
    std::fs::write(&acme, "[connectors.hec]\nindex = \"acme2\"\n").unwrap();
    let log = wait_for(&|l| l["message"] == "settings reloaded");
    assert_eq!(log["trigger"], "FileChanged", "{log}");
}

/// `make run`'s demo: three customers have destinations of their own, and the third's
/// credential is refused, so its stand-ins receive nothing while the others' receive their
/// customers' events, and the demo still stops cleanly.
#[test]
fn the_demo_runs_three_customers_one_with_a_broken_credential() {
    let out = {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "demo",
            "--config",
            &repo_config(),
            "--rate",
            "500",
            "--duration-secs",
            "8",
        ])
        .env("SWITCHYARD_LOG_FORMAT", "plain")
        .env("SWITCHYARD__ADMIN__BIND", "127.0.0.1:0");
        for (k, _) in REPO_ENV {
            cmd.env_remove(k);
        }
        cmd.output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let received = |line_start: &str| -> u64 {
        stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix(line_start)?
                    .strip_suffix(" events")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no line {line_start:?} in:\n{stderr}"))
    };
    let splunk = "stand-in for dz-connector-splunk";
    assert!(received(&format!("{splunk} received ")) > 0);
    // One record in 20 is an array of 10 events, unpacked.
    let arrays = stderr
        .lines()
        .find_map(|l| {
            let (_, rest) = l.strip_prefix("read ")?.split_once(" records, ")?;
            let (arrays, rest) = rest.split_once(" of them JSON arrays holding ")?;
            let members = rest.strip_suffix(" events")?;
            Some((arrays.parse::<u64>().ok()?, members.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no line about arrays in:\n{stderr}"));
    assert!(arrays.0 > 0, "{stderr}");
    assert_eq!(arrays.1, arrays.0 * 10, "{stderr}");
    // The last enabled connector samples half the sessions.
    let sampled = stderr
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" sampled out ")?;
            rest.strip_suffix(" events (sessions left out by sample_rate)")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no line about sampling in:\n{stderr}"));
    assert!(sampled > 0, "{stderr}");
    for customer in ["486a1f", "77be02"] {
        assert!(received(&format!("{splunk} of customer {customer} received ")) > 0);
    }
    assert_eq!(
        received(&format!(
            "{splunk} of customer c0ffee (broken credential) received "
        )),
        0
    );
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
}
