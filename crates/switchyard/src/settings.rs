//! `connectors.toml`: loading (file, `${VAR}` and `${file:PATH}` references, `SWITCHYARD__…`
//! overrides) and validation that reports every problem at once, each with its key path.

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{
    BatchLimits, EngineSettings, Filter, HealthCheck, IsolationSettings, OnExhausted, RetryPolicy,
};
use switchyard_destination::{ConnectorConfig, Descriptor};
use switchyard_http::{ClientOptions, Proxy, Tls, TlsFiles};
use switchyard_kafka::settings::{KafkaSection, Scalar};
use switchyard_kafka::{KafkaOptions, SourceConfig};

pub use switchyard_core::Problem;
use switchyard_core::config::typed;

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} Problem::new(s) in the configuration:", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kafka: SourceConfig,
    pub router: RouterSettings,
    pub admin: AdminSettings,
    pub dead_letter: DeadLetterSettings,
    pub parking: ParkingSettings,
    pub connectors: Vec<ConnectorSettings>,
    /// What loads but should change (a deprecated key, a secret written in the file):
    /// `validate` prints these and startup logs them, so they are seen without stopping anyone.
    pub warnings: Vec<Problem>,
}

/// The dead-letter topic, on the same cluster as `[kafka]`.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterSettings {
    /// None: rejected and malformed records are logged and counted only.
    pub topic: Option<String>,
    /// Raw librdkafka producer properties.
    pub options: KafkaOptions,
}

/// The parking topic of detached destinations, on the same cluster as `[kafka]` (see
/// docs/isolation.md).
#[derive(Debug, Clone)]
pub struct ParkingSettings {
    /// False: a destination that is down holds its partitions, as `on_exhausted` says.
    pub enabled: bool,
    pub topic: String,
    /// Raw librdkafka producer properties.
    pub options: KafkaOptions,
}

impl ParkingSettings {
    /// What `validate` says of the parking topic: its retention is the longest outage a
    /// destination can survive.
    pub fn note(&self) -> String {
        if self.enabled {
            format!(
                "parking topic {:?}: a destination down for longer than this topic's retention.ms loses parked events to retention; set it to the longest outage you plan for",
                self.topic
            )
        } else {
            "parking is off: a destination that is down holds back every partition it has events in"
                .into()
        }
    }
}

/// The admin HTTP server: `/metrics`, `/health/live`, `/health/ready`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    /// `/health/live` fails once a consumer's poll loop has not turned for this long
    /// (docs/health.md).
    pub stall_after: Duration,
}

#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub default_connectors: Vec<String>,
    /// Send every event to `default_connectors` only (replay); not a file setting.
    pub ignore_connector_lists: bool,
    pub max_event_bytes: usize,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ConnectorSettings {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    pub engine: EngineSettings,
    pub isolation: IsolationSettings,
    /// The destination-specific part, as its kind's crate parsed it.
    pub kind: Arc<dyn ConnectorConfig>,
    /// Its HTTP client's trusted CAs, client certificate and proxy.
    pub client: ClientOptions,
    /// Its `${NAME}` references whose variable is not set, and the files it names that cannot
    /// be read. Only a disabled connector can load with any, since it does not run; whatever
    /// enables it later must check them first.
    pub unset_variables: Vec<Problem>,
}

impl ConnectorSettings {
    /// Whether this connector could run if enabled (as `replay` does with a disabled one).
    pub fn runnable(&self) -> Result<(), Invalid> {
        if self.unset_variables.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.unset_variables.clone()))
        }
    }
}

/// Where `${NAME}` references are looked up (the process environment, normally).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A value written over connector `id`'s key `key` (dotted for a nested table, as in
/// `headers.x-api-key`), as `SWITCHYARD__CONNECTORS__…` would be: how the demo points
/// connectors at its stand-ins.
#[derive(Debug, Clone)]
pub struct ConnectorOverride {
    pub id: String,
    pub key: &'static str,
    pub value: String,
}

impl Settings {
    /// Reads and validates the file at `path`, applying `SWITCHYARD__…` overrides.
    pub fn load(path: &str, lookup: Lookup<'_>) -> Result<Settings, Invalid> {
        Self::load_with(path, lookup, &[])
    }

    /// As [`Settings::load`], with `overrides` over both the file and the environment.
    pub fn load_with(
        path: &str,
        lookup: Lookup<'_>,
        overrides: &[ConnectorOverride],
    ) -> Result<Settings, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Invalid(vec![Problem {
                path: path.into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, lookup, true, overrides)
    }

    /// Parses TOML text; `env_overrides` applies `SWITCHYARD__SECTION__KEY` variables.
    pub fn from_toml(
        text: &str,
        lookup: Lookup<'_>,
        env_overrides: bool,
    ) -> Result<Settings, Invalid> {
        Self::parse(text, lookup, env_overrides, &[])
    }

    fn parse(
        text: &str,
        lookup: Lookup<'_>,
        env_overrides: bool,
        overrides: &[ConnectorOverride],
    ) -> Result<Settings, Invalid> {
        let file = read_tree(text, false)?;
        let mut tree = if env_overrides {
            read_tree(text, true)?
        } else {
            file.clone()
        };
        for o in overrides {
            if let Some(c) = tree.get_mut("connectors").and_then(|c| c.get_mut(&o.id)) {
                set_dotted(c, o.key, &o.value);
            }
        }
        let mut warnings = literal_secrets(&file, &tree);
        let mut problems = Vec::new();
        let settings = Self::from_tree(tree, lookup, &mut problems, &mut warnings);
        // One problem per key: the first is the cause (an unset variable comes before whatever
        // its empty value then trips), the rest would only repeat it.
        let mut seen = HashSet::new();
        problems.retain(|p| seen.insert(p.path.clone()));
        match settings {
            Some(s) if problems.is_empty() => Ok(Settings { warnings, ..s }),
            _ => Err(Invalid(problems)),
        }
    }

    fn from_tree(
        tree: Value,
        lookup: Lookup<'_>,
        problems: &mut Vec<Problem>,
        warnings: &mut Vec<Problem>,
    ) -> Option<Settings> {
        let Value::Object(mut root) = tree else {
            problems.push(Problem::new("(file)", "is not a table"));
            return None;
        };
        // Connectors are resolved one by one: a disabled one may leave its variables unset.
        let connectors_table = root.remove("connectors");
        let mut unset = Vec::new();
        let mut root = interpolate_map(root, "", lookup, problems, &mut unset);
        problems.append(&mut unset);
        let kafka = section::<KafkaSection>(&mut root, "kafka", problems);
        let router = section::<RouterSection>(&mut root, "router", problems);
        let admin = section::<AdminSection>(&mut root, "admin", problems);
        let dead_letter = section::<DeadLetterSection>(&mut root, "dead_letter", problems);
        let parking = section::<ParkingSection>(&mut root, "parking", problems);
        let connectors = connectors(connectors_table, lookup, problems, warnings);
        for key in root.keys() {
            problems.push(Problem::new(
                key,
                "unknown section (expected kafka, router, admin, dead_letter, parking, connectors)",
            ));
        }
        let (kafka, router, admin, dead_letter, parking, connectors) =
            (kafka?, router?, admin?, dead_letter?, parking?, connectors);
        if parking
            .topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            problems.push(Problem::new(
                "parking.topic",
                "is empty (leave it out for <group_id>-parked)",
            ));
        }
        if parking.enabled
            && [dead_letter.topic.as_deref()]
                .into_iter()
                .flatten()
                .chain(kafka.topics.iter().map(String::as_str))
                .any(|t| Some(t) == parking.topic.as_deref())
        {
            problems.push(Problem::new(
                "parking.topic",
                "must differ from the source and dead-letter topics",
            ));
        }
        if dead_letter
            .topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            problems.push(Problem::new(
                "dead_letter.topic",
                "is empty (leave it out for no dead-letter topic)",
            ));
        }
        let bind = admin.bind.parse().map_err(|e| {
            problems.push(Problem::new(
                "admin.bind",
                &format!("{e}: {:?} (expected address:port)", admin.bind),
            ))
        });
        kafka.check(problems);
        let stall_after = admin.stall_after(&kafka, &router, problems);
        let ids: HashSet<&str> = connectors.iter().map(|c| c.id.as_str()).collect();
        for (i, id) in router.default_connectors.iter().enumerate() {
            if !ids.contains(id.as_str()) {
                problems.push(Problem::new(
                    &format!("router.default_connectors[{i}]"),
                    &format!("no connector {id:?} is configured"),
                ));
            }
        }
        if router.max_event_bytes == 0 {
            problems.push(Problem::new("router.max_event_bytes", "must be at least 1"));
        }
        if connectors.len() > switchyard_core::TargetSet::CAPACITY {
            problems.push(Problem::new(
                "connectors",
                &format!(
                    "at most {} connectors are supported",
                    switchyard_core::TargetSet::CAPACITY
                ),
            ));
        }
        Some(Settings {
            parking: ParkingSettings {
                enabled: parking.enabled,
                topic: parking
                    .topic
                    .unwrap_or_else(|| format!("{}-parked", kafka.group_id)),
                options: parking
                    .options
                    .into_iter()
                    .map(|(k, v)| (k, v.into_string()))
                    .collect(),
            },
            dead_letter: DeadLetterSettings {
                topic: dead_letter.topic,
                options: dead_letter
                    .options
                    .into_iter()
                    .map(|(k, v)| (k, v.into_string()))
                    .collect(),
            },
            admin: AdminSettings {
                enabled: admin.enabled,
                bind: bind.ok()?,
                stall_after,
            },
            kafka: kafka.into_source(router.shutdown_timeout()),
            router: RouterSettings {
                ignore_connector_lists: false,
                shutdown_timeout: router.shutdown_timeout(),
                default_connectors: router.default_connectors,
                max_event_bytes: router.max_event_bytes,
            },
            connectors,
            warnings: Vec::new(),
        })
    }
}

/// Sets `key` (dotted: `a.b` is key `b` of table `a`, made if absent) in `table` to `value`.
fn set_dotted(table: &mut Value, key: &str, value: &str) {
    let mut at = table;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(part.into(), Value::String(value.into()));
            return;
        }
        at = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The file's tree, with the `SWITCHYARD__…` variables over it when `env_overrides`.
fn read_tree(text: &str, env_overrides: bool) -> Result<Value, Invalid> {
    let mut builder = Config::builder().add_source(File::from_str(text, FileFormat::Toml));
    if env_overrides {
        builder = builder.add_source(
            Environment::with_prefix("SWITCHYARD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
    }
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            Invalid(vec![Problem {
                path: "(file)".into(),
                message: e.to_string(),
            }])
        })
}

/// Whether `written`, a value in the file, is a secret itself rather than a reference to one.
fn is_literal(written: &Value) -> bool {
    match written {
        Value::String(s) => !s.contains("${") && !s.trim().is_empty(),
        Value::Number(_) => true,
        _ => false,
    }
}

/// A warning for each secret written in the file itself rather than taken from a `${NAME}`
/// or `${file:PATH}` reference or an override: files get committed and copied around. Never
/// includes the value.
fn literal_secrets(file: &Value, merged: &Value) -> Vec<Problem> {
    let mut out = literal_kafka_secrets(file);
    let Some(Value::Object(connectors)) = merged.get("connectors") else {
        return out;
    };
    for (id, connector) in connectors {
        let kind = connector.get("kind").and_then(Value::as_str).unwrap_or("");
        let secret_keys = crate::destinations::find(kind).map_or(&[][..], |d| d.secret_keys);
        for &key in secret_keys {
            let Some(written) = file
                .get("connectors")
                .and_then(|c| c.get(id))
                .and_then(|c| c.get(key))
            else {
                continue;
            };
            // A table of secrets (OTLP's headers) holds one in each value.
            let entries: Vec<(String, &Value, Option<&Value>)> = match written {
                Value::Object(table) => table
                    .iter()
                    .map(|(name, v)| {
                        let merged = connector.get(key).and_then(|t| t.get(name));
                        (format!("{key}.{name}"), v, merged)
                    })
                    .collect(),
                v => vec![(key.to_string(), v, connector.get(key))],
            };
            for (key, written, merged) in entries {
                // An override replaces the file's value, which is then never used.
                if is_literal(written) && merged == Some(written) {
                    out.push(literal_secret(id, &key));
                }
            }
        }
    }
    out
}

fn literal_secret(id: &str, key: &str) -> Problem {
    Problem {
        path: format!("connectors.{id}.{key}"),
        message: format!(
            "is a secret written in the file; use a ${{NAME}} or ${{file:PATH}} reference or \
             set SWITCHYARD__CONNECTORS__{}__{} instead",
            id.to_uppercase(),
            key.replace('.', "__").to_uppercase()
        ),
    }
}

/// The same warning for librdkafka credentials (`sasl.password` and the like) written in
/// `[kafka.options]`, `[dead_letter.options]` or `[parking.options]`.
fn literal_kafka_secrets(file: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    for section in ["kafka", "dead_letter", "parking"] {
        let Some(Value::Object(options)) = file.get(section).and_then(|s| s.get("options")) else {
            continue;
        };
        for (key, written) in options {
            if switchyard_kafka::is_sensitive(key) && is_literal(written) {
                out.push(Problem::new(
                    &format!("{section}.options.{key}"),
                    "is a secret written in the file; use a ${NAME} or ${file:PATH} reference \
                     instead",
                ));
            }
        }
    }
    out
}

/// Deserializes `root[name]` (absent = empty table) as `T`, reporting the failing key path.
fn section<T: DeserializeOwned>(
    root: &mut Map<String, Value>,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let value = root
        .remove(name)
        .unwrap_or_else(|| Value::Object(Map::new()));
    typed(value, name, problems)
}

/// Replaces `${NAME}` in every string with the variable's value and `${file:PATH}` with the
/// file's content. A malformed reference is a problem; an unset name or unreadable file goes
/// to `unset` (it is a problem only where the value is needed) and leaves an empty string.
fn interpolate(
    v: Value,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(&s, path, lookup, problems, unset)),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, x)| interpolate(x, &format!("{path}[{i}]"), lookup, problems, unset))
                .collect(),
        ),
        Value::Object(o) => Value::Object(interpolate_map(o, path, lookup, problems, unset)),
        other => other,
    }
}

fn interpolate_map(
    o: Map<String, Value>,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> Map<String, Value> {
    o.into_iter()
        .map(|(k, x)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            (k, interpolate(x, &p, lookup, problems, unset))
        })
        .collect()
}

fn substitute(
    s: &str,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push(Problem::new(path, "unclosed ${ in value"));
            return s.to_string();
        };
        let name = &after[..end];
        let value = match name.strip_prefix("file:") {
            Some(file) => read_secret_file(file),
            None => lookup(name).ok_or_else(|| format!("environment variable {name} is not set")),
        };
        match value {
            Ok(value) => out.push_str(&value),
            Err(message) => unset.push(Problem::new(path, &message)),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A mounted secret's content without the one trailing newline that `echo` and most editors
/// leave, which no token or password means. The error names the file, never its content.
fn read_secret_file(path: &str) -> Result<String, String> {
    let mut text =
        std::fs::read_to_string(path).map_err(|e| format!("file {path} cannot be read: {e}"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSection {
    /// Connectors for events without a `connector_list`.
    #[serde(default)]
    default_connectors: Vec<String>,
    #[serde(default = "d_max_event_bytes")]
    max_event_bytes: usize,
    #[serde(default = "d_shutdown")]
    shutdown_timeout_secs: u64,
}

fn d_max_event_bytes() -> usize {
    1 << 20
}
fn d_shutdown() -> u64 {
    30
}

impl RouterSection {
    fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterSection {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParkingSection {
    #[serde(default = "d_true")]
    enabled: bool,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    options: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    #[serde(default = "d_true")]
    enabled: bool,
    /// 9090, on every interface: the kubelet and Prometheus reach it from outside the pod.
    #[serde(default = "d_bind")]
    bind: String,
    /// See [`AdminSettings::stall_after`].
    #[serde(default)]
    stall_after_secs: Option<u64>,
}

fn d_bind() -> String {
    "0.0.0.0:9090".into()
}

/// The default `admin.stall_after_secs`, and the margin it must keep over the longest wait
/// the poll loop makes by design: a synchronous commit to a coordinator that is away is
/// deferred up to librdkafka's `session.timeout.ms` (45 s) and one that does not answer
/// times out at `socket.timeout.ms` (60 s).
const STALL_AFTER_SECS: u64 = 120;
const STALL_MARGIN_SECS: u64 = 60;

impl AdminSection {
    /// The poll loop legitimately stops turning while a revoke waits for deliveries
    /// (`kafka.revoke_drain_timeout_secs`, then a synchronous commit), during any commit, and
    /// while stopping
    /// (`router.shutdown_timeout_secs`); a stall limit below those would restart a healthy
    /// router. Unset, it is the default or that floor, whichever is larger.
    fn stall_after(
        &self,
        kafka: &KafkaSection,
        router: &RouterSection,
        problems: &mut Vec<Problem>,
    ) -> Duration {
        let floor = kafka
            .revoke_drain_timeout_secs
            .max(router.shutdown_timeout_secs)
            .saturating_add(STALL_MARGIN_SECS);
        let secs = match self.stall_after_secs {
            None => STALL_AFTER_SECS.max(floor),
            Some(s) if s < floor => {
                problems.push(Problem::new(
                    "admin.stall_after_secs",
                    &format!(
                        "must be at least {floor} (the longer of kafka.revoke_drain_timeout_secs and router.shutdown_timeout_secs, plus {STALL_MARGIN_SECS}): the poll loop waits that long by design"
                    ),
                ));
                s
            }
            Some(s) => s,
        };
        Duration::from_secs(secs)
    }
}

/// The keys every connector has, whatever its kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonSection {
    kind: String,
    #[serde(default = "d_true")]
    enabled: bool,
    #[serde(default = "d_concurrency")]
    concurrency: usize,
    #[serde(default = "d_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    batch: BatchSection,
    #[serde(default)]
    retry: RetrySection,
    #[serde(default)]
    filter: FilterSection,
    /// Append this connector's latest delivery timings to each event it sends.
    #[serde(default = "d_true")]
    append_observability: bool,
    /// A delivery failing this long detaches the destination (docs/isolation.md).
    #[serde(default = "d_detach_after")]
    detach_after_secs: u64,
    /// While detached, probes double their interval up to this.
    #[serde(default = "d_probe_max")]
    probe_max_interval_secs: u64,
    #[serde(default)]
    health_check: HealthCheckSection,
    /// Trusted CAs and the client certificate (docs/security.md).
    #[serde(default)]
    tls: Option<TlsSection>,
    /// An `http://` proxy URL, or `"none"`; absent, `HTTPS_PROXY` and the rest apply.
    #[serde(default)]
    proxy: Option<String>,
}

/// `[connectors.<id>.health_check]` (docs/health.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HealthCheckSection {
    enabled: bool,
    interval_secs: u64,
}

impl Default for HealthCheckSection {
    fn default() -> Self {
        let d = HealthCheck::default();
        HealthCheckSection {
            enabled: d.enabled,
            interval_secs: d.interval.as_secs(),
        }
    }
}

/// `[connectors.<id>.tls]`: paths of PEM files, read once at startup.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "d_true")]
    trust_system_roots: bool,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

impl TlsSection {
    fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            trust_system_roots: self.trust_system_roots,
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

fn d_detach_after() -> u64 {
    IsolationSettings::default().detach_after.as_secs()
}
fn d_probe_max() -> u64 {
    IsolationSettings::default().probe_max.as_secs()
}

const COMMON_KEYS: [&str; 13] = [
    "health_check",
    "tls",
    "proxy",
    "detach_after_secs",
    "probe_max_interval_secs",
    "kind",
    "enabled",
    "concurrency",
    "timeout_secs",
    "batch",
    "retry",
    "filter",
    "append_observability",
];

fn d_true() -> bool {
    true
}
fn d_concurrency() -> usize {
    4
}
fn d_timeout() -> u64 {
    30
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchSection {
    max_events: Option<usize>,
    max_bytes: Option<usize>,
    max_linger_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetrySection {
    max_attempts: u32,
    max_elapsed_secs: u64,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
    on_exhausted: OnExhausted,
}

impl Default for RetrySection {
    fn default() -> Self {
        let p = RetryPolicy::default();
        RetrySection {
            max_attempts: p.max_attempts,
            max_elapsed_secs: p.max_elapsed.as_secs(),
            initial_backoff_ms: p.initial_backoff.as_millis() as u64,
            max_backoff_ms: p.max_backoff.as_millis() as u64,
            on_exhausted: p.on_exhausted,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSection {
    #[serde(default)]
    include_event_types: Vec<String>,
    #[serde(default)]
    exclude_event_types: Vec<String>,
    #[serde(default)]
    include_customers: Vec<String>,
    #[serde(default)]
    exclude_customers: Vec<String>,
}

fn connectors(
    value: Option<Value>,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<ConnectorSettings> {
    let table = match value {
        None => Map::new(),
        Some(Value::Object(t)) => t,
        Some(_) => {
            problems.push(Problem::new(
                "connectors",
                "must be a table of [connectors.<id>] tables",
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (id, v) in table {
        let path = format!("connectors.{id}");
        let Value::Object(fields) = v else {
            problems.push(Problem::new(&path, "must be a table"));
            continue;
        };
        let mut unset = Vec::new();
        let fields = interpolate_map(fields, &path, lookup, problems, &mut unset);
        // A disabled connector does not run, so the variables it would need may be absent
        // (as when it is switched off by an override in an environment without its secrets).
        // Its other mistakes are still reported.
        let enabled = fields
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let mut found = Vec::new();
        let connector = connector(id, &path, fields, &mut found, &mut unset, warnings);
        if enabled {
            problems.extend(unset.iter().cloned());
        } else {
            // What an unset variable's empty value trips is not a problem either.
            found.retain(|p| !unset.iter().any(|u| u.path == p.path));
        }
        problems.append(&mut found);
        if let Some(mut c) = connector {
            c.unset_variables = unset;
            out.push(c);
        }
    }
    out
}

/// One connector's table (already interpolated) as settings; problems go to `problems`, files
/// it names that cannot be read to `unset`.
fn connector(
    id: String,
    path: &str,
    mut fields: Map<String, Value>,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<ConnectorSettings> {
    let mut common_fields = Map::new();
    for k in COMMON_KEYS {
        if let Some(v) = fields.remove(k) {
            common_fields.insert(k.into(), v);
        }
    }
    let common = typed::<CommonSection>(Value::Object(common_fields), path, problems)?;
    let Some(descriptor) = crate::destinations::find(&common.kind) else {
        problems.push(Problem::new(
            &format!("{path}.kind"),
            &format!(
                "unknown kind {:?} (known: {})",
                common.kind,
                crate::destinations::names()
            ),
        ));
        return None;
    };
    let kind = kind_config(descriptor, fields, path, problems, warnings);
    let identity = common
        .tls
        .as_ref()
        .is_some_and(|t| t.cert_file.is_some() || t.key_file.is_some());
    if !descriptor.client_certificates && identity {
        problems.push(Problem::new(
            &format!("{path}.tls.cert_file"),
            &format!(
                "a client certificate is not supported for {}: its client cannot present one",
                descriptor.kind
            ),
        ));
    }
    let defaults = descriptor.default_limits;
    let client = client_options(&common, path, problems, unset)?;
    let engine = engine_settings(&common, defaults, path, problems)?;
    warnings.extend(over_hard_limits(engine.limits, descriptor, path));
    let isolation = isolation_settings(&common, path, problems)?;
    Some(ConnectorSettings {
        id,
        enabled: common.enabled,
        filter: filter(common.filter),
        engine,
        isolation,
        kind: kind?,
        client,
        unset_variables: Vec::new(),
    })
}

/// The connector's HTTP client options, its files read and checked now so that a missing or
/// wrong one stops startup with its key path rather than failing every delivery. A file that
/// cannot be read goes to `unset`, as an unset variable does: a disabled connector may name
/// files this environment does not mount.
fn client_options(
    common: &CommonSection,
    path: &str,
    problems: &mut Vec<Problem>,
    unset: &mut Vec<Problem>,
) -> Option<ClientOptions> {
    let before = problems.len();
    let proxy = match common.proxy.as_deref().map(Proxy::parse) {
        None => Proxy::default(),
        Some(Ok(p)) => p,
        Some(Err(message)) => {
            problems.push(Problem::new(&format!("{path}.proxy"), &message));
            Proxy::default()
        }
    };
    let tls = match common.tls.as_ref().map(|t| Tls::load(&t.files())) {
        None => Tls::default(),
        Some(Ok(tls)) => tls,
        Some(Err(errors)) => {
            for e in errors {
                let p = Problem::new(&format!("{path}.tls.{}", e.key()), &e.to_string());
                match e {
                    switchyard_http::TlsError::Read { .. } => unset.push(p),
                    _ => problems.push(p),
                }
            }
            // Only reached with a file missing, and then the connector cannot run.
            Tls::default()
        }
    };
    if problems.len() > before {
        return None;
    }
    let options = ClientOptions { tls, proxy };
    // Building a client parses the certificates and pairs the key with its certificate;
    // without TLS or proxy settings there is nothing it could find wrong.
    if (common.tls.is_some() || common.proxy.is_some())
        && let Err(e) = options.check()
    {
        problems.push(Problem::new(&format!("{path}.tls"), &e.to_string()));
        return None;
    }
    Some(options)
}

/// Takes `old` as the deprecated name of `new`, with a warning, so files written for it keep
/// loading; both at once is a problem, since one would silently win. Returns whether `old`
/// was used.
fn deprecated_name(
    fields: &mut Map<String, Value>,
    path: &str,
    (old, new): (&str, &str),
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> bool {
    let Some(value) = fields.remove(old) else {
        return false;
    };
    let at = format!("{path}.{old}");
    if fields.contains_key(new) {
        problems.push(Problem::new(
            &at,
            &format!("is the deprecated name of {new}, which is also set; keep only {new}"),
        ));
        return false;
    }
    warnings.push(Problem::new(
        &at,
        &format!("is deprecated; call it {new}, as the other connectors do"),
    ));
    fields.insert(new.into(), value);
    true
}

/// A kind's own settings, parsed and checked by its crate, all reported under `path`; a
/// problem with a renamed key names the key the file has, so it can be found there.
fn kind_config(
    descriptor: &Descriptor,
    mut fields: Map<String, Value>,
    path: &str,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Arc<dyn ConnectorConfig>> {
    let renamed: Vec<(&str, &str)> = descriptor
        .renamed_keys
        .iter()
        .copied()
        .filter(|&names| deprecated_name(&mut fields, path, names, problems, warnings))
        .collect();
    let before = problems.len();
    let config = descriptor.parse(fields, path, problems);
    for (old, new) in renamed {
        let (new, old) = (format!("{path}.{new}"), format!("{path}.{old}"));
        for p in problems[before..].iter_mut().filter(|p| p.path == new) {
            p.path.clone_from(&old);
        }
    }
    config
}

fn isolation_settings(
    c: &CommonSection,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<IsolationSettings> {
    let defaults = IsolationSettings::default();
    let before = problems.len();
    if c.detach_after_secs == 0 {
        problems.push(Problem::new(
            &format!("{path}.detach_after_secs"),
            "must be at least 1",
        ));
    }
    if c.probe_max_interval_secs < defaults.probe_initial.as_secs() {
        problems.push(Problem::new(
            &format!("{path}.probe_max_interval_secs"),
            &format!(
                "must be at least {} (the first probe's delay)",
                defaults.probe_initial.as_secs()
            ),
        ));
    }
    (problems.len() == before).then(|| IsolationSettings {
        detach_after: Duration::from_secs(c.detach_after_secs),
        probe_max: Duration::from_secs(c.probe_max_interval_secs),
        ..defaults
    })
}

fn engine_settings(
    c: &CommonSection,
    defaults: BatchLimits,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<EngineSettings> {
    let before = problems.len();
    let mut positive = |key: &str, v: u64| {
        if v == 0 {
            problems.push(Problem::new(&format!("{path}.{key}"), "must be at least 1"));
        }
    };
    positive("batch.max_events", c.batch.max_events.unwrap_or(1) as u64);
    positive("batch.max_bytes", c.batch.max_bytes.unwrap_or(1) as u64);
    positive("concurrency", c.concurrency as u64);
    positive("timeout_secs", c.timeout_secs);
    positive("retry.max_attempts", c.retry.max_attempts as u64);
    positive("health_check.interval_secs", c.health_check.interval_secs);
    if c.retry.initial_backoff_ms > c.retry.max_backoff_ms {
        problems.push(Problem::new(
            &format!("{path}.retry.initial_backoff_ms"),
            "is larger than retry.max_backoff_ms",
        ));
    }
    (problems.len() == before).then(|| EngineSettings {
        limits: BatchLimits {
            max_events: c.batch.max_events.unwrap_or(defaults.max_events),
            max_bytes: c.batch.max_bytes.unwrap_or(defaults.max_bytes),
            max_linger: c
                .batch
                .max_linger_ms
                .map_or(defaults.max_linger, Duration::from_millis),
        },
        retry: RetryPolicy {
            max_attempts: c.retry.max_attempts,
            max_elapsed: Duration::from_secs(c.retry.max_elapsed_secs),
            initial_backoff: Duration::from_millis(c.retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(c.retry.max_backoff_ms),
            on_exhausted: c.retry.on_exhausted,
        },
        concurrency: c.concurrency,
        request_timeout: Duration::from_secs(c.timeout_secs),
        append_observability: c.append_observability,
        health_check: HealthCheck {
            enabled: c.health_check.enabled,
            interval: Duration::from_secs(c.health_check.interval_secs),
        },
    })
}

/// A warning for each batch limit set above what the destination's API allows: the engine
/// uses the API's limit instead, and the file should say what actually happens.
fn over_hard_limits(limits: BatchLimits, descriptor: &Descriptor, path: &str) -> Vec<Problem> {
    let hard = descriptor.hard_limits;
    let over = |key: &str, set: String, max: String| {
        Problem::new(
            &format!("{path}.batch.{key}"),
            &format!(
                "{set} is over what {} allows; {max} is used",
                descriptor.kind
            ),
        )
    };
    let mut out = Vec::new();
    if limits.max_events > hard.max_events {
        out.push(over(
            "max_events",
            limits.max_events.to_string(),
            hard.max_events.to_string(),
        ));
    }
    if limits.max_bytes > hard.max_bytes {
        out.push(over(
            "max_bytes",
            limits.max_bytes.to_string(),
            hard.max_bytes.to_string(),
        ));
    }
    if limits.max_linger > hard.max_linger {
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        out.push(over(
            "max_linger_ms",
            ms(limits.max_linger),
            ms(hard.max_linger),
        ));
    }
    out
}

fn filter(f: FilterSection) -> Filter {
    Filter {
        include_event_types: f.include_event_types.into_iter().collect(),
        exclude_event_types: f.exclude_event_types.into_iter().collect(),
        include_customers: f.include_customers.into_iter().collect(),
        exclude_customers: f.exclude_customers.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_kinesis_firehose::FirehoseConfig;
    use switchyard_splunk_hec::HecConfig;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "SPLUNK_HEC_TOKEN" => Some("11111111-2222-3333-4444-555555555555".into()),
            "DD_API_KEY" | "NEW_RELIC_LICENSE_KEY" | "OTLP_API_KEY" => {
                Some(format!("{name}-value"))
            }
            "NEW_RELIC_ACCOUNT_ID" => Some("1234567".into()),
            "KAFKA_PASSWORD" => Some("env-kafka-p4ss".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Settings, Invalid> {
        Settings::from_toml(text, &lookup, false)
    }

    #[test]
    fn the_repo_config_is_valid() {
        let s = load(include_str!("../../../connectors.toml")).unwrap();
        assert_eq!(s.kafka.topics, ["qoe-events"]);
        assert_eq!(
            s.kafka
                .options
                .get("session.timeout.ms")
                .map(String::as_str),
            Some("45000")
        );
        let c = &s.connectors[0];
        assert_eq!(c.id, "dz-connector-splunk");
        assert_eq!(c.engine.limits.max_bytes, 1_000_000);
        let hec = c
            .kind
            .downcast_ref::<HecConfig>()
            .expect("the first connector is HEC");
        assert_eq!(
            hec.token.as_ref().unwrap().expose(),
            "11111111-2222-3333-4444-555555555555"
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // The repo config shows every kind this build knows, in the list's order.
        let kinds: Vec<&str> = s.connectors.iter().map(|c| c.kind.kind()).collect();
        let known: Vec<&str> = crate::destinations::DESTINATIONS
            .iter()
            .map(|d| d.kind)
            .collect();
        assert_eq!(kinds, known);
    }

    const BASE: &str = r#"
[kafka]
brokers = "k:9092"
topics = ["qoe"]
group_id = "g"
[connectors.hec]
kind = "splunk_hec"
endpoint = "https://hec:8088"
token = "${SPLUNK_HEC_TOKEN}"
"#;

    #[test]
    fn group_instance_id_is_optional_and_maps_to_static_membership() {
        assert_eq!(load(BASE).unwrap().kafka.group_instance_id, None);
        let with = BASE.replace(
            "group_id = \"g\"",
            "group_id = \"g\"\ngroup_instance_id = 7",
        );
        assert_eq!(
            load(&with).unwrap().kafka.group_instance_id.as_deref(),
            Some("7"),
            "a pod name that looks like a number is still a name"
        );
        let empty = BASE.replace(
            "group_id = \"g\"",
            "group_id = \"g\"\ngroup_instance_id = \" \"",
        );
        let keys: Vec<String> = load(&empty)
            .unwrap_err()
            .0
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(keys, ["kafka.group_instance_id"]);
    }

    #[test]
    fn isolation_is_on_by_default_with_a_parking_topic_named_after_the_group() {
        let s = load(BASE).unwrap();
        assert!(s.parking.enabled);
        assert_eq!(s.parking.topic, "g-parked");
        assert_eq!(s.connectors[0].isolation, IsolationSettings::default());
        assert!(
            s.parking.note().contains("\"g-parked\"") && s.parking.note().contains("retention")
        );
        let repo = load(include_str!("../../../connectors.toml")).unwrap();
        assert_eq!(repo.parking.topic, "qoe-events-parked");
    }

    #[test]
    fn isolation_knobs_are_validated_with_their_key_paths() {
        let text = format!(
            "{BASE}detach_after_secs = 0\nprobe_max_interval_secs = 2\n[parking]\ntopic = \"qoe\"\n"
        );
        let keys: Vec<String> = load(&text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            keys,
            [
                "connectors.hec.detach_after_secs",
                "connectors.hec.probe_max_interval_secs",
                "parking.topic"
            ]
        );
        let text = format!("{BASE}detach_after_secs = 5\n[parking]\nenabled = false\n");
        let s = load(&text).unwrap();
        assert!(!s.parking.enabled);
        assert_eq!(
            s.connectors[0].isolation.detach_after,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn health_checks_and_the_stall_limit_default_and_are_validated_with_their_key_paths() {
        let s = load(BASE).unwrap();
        assert_eq!(s.connectors[0].engine.health_check, HealthCheck::default());
        assert_eq!(s.admin.stall_after, Duration::from_secs(120));

        let text = format!(
            "{BASE}[connectors.hec.health_check]\nenabled = false\ninterval_secs = 3\n[admin]\nstall_after_secs = 400\n"
        );
        let s = load(&text).unwrap();
        let check = s.connectors[0].engine.health_check;
        assert!(!check.enabled);
        assert_eq!(check.interval, Duration::from_secs(3));
        assert_eq!(s.admin.stall_after, Duration::from_secs(400));

        // Unset, the limit keeps its margin over a long revoke wait.
        let long_revoke = BASE.replace(
            "group_id = \"g\"",
            "group_id = \"g\"\nrevoke_drain_timeout_secs = 300",
        );
        assert_eq!(
            load(&long_revoke).unwrap().admin.stall_after,
            Duration::from_secs(360)
        );

        let text = format!(
            "{long_revoke}[connectors.hec.health_check]\ninterval_secs = 0\nevery = 5\n[admin]\nstall_after_secs = 300\n"
        );
        let problems = load(&text).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "connectors.hec.health_check.every",
                "admin.stall_after_secs"
            ],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("at least 360"), "{problems:?}");
        let text = format!("{BASE}[connectors.hec.health_check]\ninterval_secs = 0\n");
        let keys: Vec<String> = load(&text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(keys, ["connectors.hec.health_check.interval_secs"]);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let s = load(include_str!("../../../connectors.toml")).unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("11111111") && !debug.contains("-value"),
            "{debug}"
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let text = r#"
[kafka]
brokers = ""
topics = ["t"]
group_id = "g"
[router]
default_connectors = ["nowhere"]
[connectors.a]
kind = "splunk_hec"
endpoint = "not a url"
[connectors.b]
kind = "carrier_pigeon"
[connectors.c]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "${NOT_SET_ANYWHERE}"
[connectors.c.batch]
max_events = 0
[connectors.d]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "x"
colour = "blue"
"#;
        let problems = load(text).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "kafka.brokers",
            "router.default_connectors[0]",
            "connectors.a.endpoint",
            "connectors.a.token",
            "connectors.b.kind",
            "connectors.c.token",
            "connectors.c.batch.max_events",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let msg = |path: &str| {
            problems
                .iter()
                .find(|p| p.path == path)
                .unwrap()
                .message
                .clone()
        };
        assert!(msg("connectors.c.token").contains("NOT_SET_ANYWHERE"));
        assert!(msg("connectors.b.kind").contains("carrier_pigeon"));
        assert!(
            problems
                .iter()
                .any(|p| p.path.starts_with("connectors.d") && p.message.contains("colour"))
        );
    }

    #[test]
    fn a_batch_limit_over_the_apis_is_a_warning_naming_the_limit_used() {
        let text = format!(
            "{BASE}[connectors.dd]\nkind = \"datadog_logs\"\napi_key = \"${{DD_API_KEY}}\"\n\
             [connectors.dd.batch]\nmax_bytes = 20000000\nmax_events = 10\n"
        );
        let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let hard = switchyard_datadog_logs::config::HARD_LIMITS;
        assert_eq!(
            s.warnings,
            [Problem::new(
                "connectors.dd.batch.max_bytes",
                &format!(
                    "20000000 is over what datadog_logs allows; {} is used",
                    hard.max_bytes
                )
            )]
        );
    }

    #[test]
    fn overrides_set_dotted_keys_in_nested_tables() {
        let mut t = serde_json::json!({"endpoint": "a", "headers": {"x": "1"}});
        set_dotted(&mut t, "endpoint", "b");
        set_dotted(&mut t, "headers.x-api-key", "k");
        set_dotted(&mut t, "new.table.key", "v");
        assert_eq!(
            t,
            serde_json::json!({
                "endpoint": "b",
                "headers": {"x": "1", "x-api-key": "k"},
                "new": {"table": {"key": "v"}}
            })
        );
    }

    #[test]
    fn batch_and_retry_defaults_come_from_the_kind_and_policy() {
        let s = load(
            "[kafka]\nbrokers=\"b:9092\"\ntopics=[\"t\"]\ngroup_id=\"g\"\n[connectors.x]\nkind=\"splunk_hec\"\nendpoint=\"http://h\"\ntoken=\"t\"\n[connectors.x.batch]\nmax_linger_ms = 5\n",
        )
        .unwrap();
        let e = s.connectors[0].engine;
        assert_eq!(
            e.limits.max_bytes,
            switchyard_splunk_hec::config::DEFAULT_LIMITS.max_bytes
        );
        assert_eq!(e.limits.max_linger, Duration::from_millis(5));
        assert_eq!(e.retry, RetryPolicy::default());
    }

    #[test]
    fn datadog_and_new_relic_settings_are_checked() {
        let text = r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.dd]
kind = "datadog_logs"
site = "mars1"
tags = ["a:b,c:d"]
[connectors.nr]
kind = "newrelic_events"
account_id = "my-account"
event_type = "Qoe.Event"
arrays = "sometimes"
[connectors.nr2]
kind = "newrelic_events"
account_id = "42"
license_key = "x"
insert_key = "y"
[connectors.fh]
kind = "kinesis_firehose"
delivery_stream = ""
endpoint_url = "localhost:4566"
access_key_id = "AKID"
"#;
        let problems = load(text).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "connectors.dd.site",
            "connectors.dd.api_key",
            "connectors.dd.tags",
            "connectors.nr.arrays",
            "connectors.nr2.insert_key",
            "connectors.fh.delivery_stream",
            "connectors.fh.endpoint_url",
            "connectors.fh.secret_access_key",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let text = text.replace("arrays = \"sometimes\"", "");
        let problems = load(&text).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "connectors.nr.account_id",
            "connectors.nr.license_key",
            "connectors.nr.event_type",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }

    const KAFKA: &str = "[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n";

    /// One connector of each kind taking its secrets (and its URL or account) from variables
    /// that no test environment sets.
    fn every_kind_from_unset_variables(enabled: bool) -> String {
        format!(
            r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
enabled = {enabled}
endpoint = "${{UNSET_HEC_URL}}"
token = "${{UNSET_HEC_TOKEN}}"
[connectors.dd]
kind = "datadog_logs"
enabled = {enabled}
api_key = "${{UNSET_DD_API_KEY}}"
[connectors.nr]
kind = "newrelic_events"
enabled = {enabled}
account_id = "${{UNSET_NR_ACCOUNT_ID}}"
license_key = "${{UNSET_NR_LICENSE_KEY}}"
[connectors.fh]
kind = "kinesis_firehose"
enabled = {enabled}
delivery_stream = "s"
access_key_id = "${{UNSET_FH_ACCESS_KEY_ID}}"
secret_access_key = "${{UNSET_FH_SECRET_ACCESS_KEY}}"
"#
        )
    }

    #[test]
    fn a_disabled_connector_needs_none_of_its_variables() {
        let s = load(&every_kind_from_unset_variables(false)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.connectors.len(), 4);
        assert!(s.connectors.iter().all(|c| !c.enabled));
        // Enabling it later (replay does) must not go ahead without them.
        let hec = s.connectors.iter().find(|c| c.id == "hec").unwrap();
        let err = hec.runnable().unwrap_err().to_string();
        assert!(
            err.contains("connectors.hec.token: environment variable UNSET_HEC_TOKEN is not set")
                && err.contains("connectors.hec.endpoint"),
            "{err}"
        );
        let fh = s.connectors.iter().find(|c| c.id == "fh").unwrap();
        assert_eq!(fh.runnable().unwrap_err().0.len(), 2);
    }

    #[test]
    fn a_disabled_connectors_other_mistakes_are_still_reported() {
        let text = format!(
            r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
enabled = false
endpoint = "ftp://nowhere"
token = "${{UNSET_HEC_TOKEN}}"
[connectors.hec2]
kind = "splunk_hec"
enabled = false
endpoint = "http://hec:8088"
token = "${{UNSET_HEC_TOKEN}}"
colour = "blue"
[connectors.dd]
kind = "datadog_logs"
enabled = false
site = "mars1"
api_key = "${{UNSET_DD_API_KEY}}"
concurrency = 0
"#
        );
        let problems = load(&text).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "connectors.hec.endpoint",
            "connectors.dd.site",
            "connectors.dd.concurrency",
        ] {
            assert!(paths.contains(&want), "{want} missing from {problems:?}");
        }
        assert!(
            problems
                .iter()
                .any(|p| p.path.starts_with("connectors.hec2") && p.message.contains("colour")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.path.ends_with(".token")
                || p.path.ends_with(".api_key")
                || p.message.contains("UNSET_")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unset_variable_is_the_only_problem_of_its_key() {
        let text = every_kind_from_unset_variables(true)
            .replace("brokers = \"b:9092\"", "brokers = \"${UNSET_BROKERS}\"");
        let problems = load(&text).unwrap_err().0;
        for (path, var) in [
            ("kafka.brokers", "UNSET_BROKERS"),
            ("connectors.hec.endpoint", "UNSET_HEC_URL"),
            ("connectors.hec.token", "UNSET_HEC_TOKEN"),
            ("connectors.dd.api_key", "UNSET_DD_API_KEY"),
            ("connectors.nr.account_id", "UNSET_NR_ACCOUNT_ID"),
            ("connectors.nr.license_key", "UNSET_NR_LICENSE_KEY"),
            ("connectors.fh.access_key_id", "UNSET_FH_ACCESS_KEY_ID"),
            (
                "connectors.fh.secret_access_key",
                "UNSET_FH_SECRET_ACCESS_KEY",
            ),
        ] {
            let at: Vec<&Problem> = problems.iter().filter(|p| p.path == path).collect();
            assert_eq!(at.len(), 1, "{path}: {at:?}");
            assert_eq!(
                at[0].message,
                format!("environment variable {var} is not set")
            );
        }
        assert_eq!(problems.len(), 8, "{problems:?}");
    }

    fn firehose(keys: &str) -> String {
        format!(
            "{KAFKA}[connectors.fh]\nkind = \"kinesis_firehose\"\ndelivery_stream = \"s\"\n{keys}\n"
        )
    }

    fn firehose_endpoint(s: &Settings) -> Option<String> {
        let kind = &s.connectors[0].kind;
        let Some(c) = kind.downcast_ref::<FirehoseConfig>() else {
            panic!("not Firehose: {kind:?}")
        };
        c.endpoint.clone()
    }

    #[test]
    fn firehose_takes_endpoint_like_the_others_and_endpoint_url_with_a_warning() {
        let s = load(&firehose("endpoint = \"http://localhost:4566\""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            firehose_endpoint(&s).as_deref(),
            Some("http://localhost:4566")
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        let s = load(&firehose("endpoint_url = \"http://localhost:4566\""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            firehose_endpoint(&s).as_deref(),
            Some("http://localhost:4566")
        );
        assert_eq!(
            s.warnings,
            [Problem::new(
                "connectors.fh.endpoint_url",
                "is deprecated; call it endpoint, as the other connectors do"
            )]
        );

        let problems = load(&firehose(
            "endpoint = \"http://a:4566\"\nendpoint_url = \"http://b:4566\"",
        ))
        .unwrap_err()
        .0;
        assert_eq!(
            problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
            ["connectors.fh.endpoint_url"],
            "{problems:?}"
        );

        // A bad value is reported under the name the file gives it.
        for key in ["endpoint", "endpoint_url"] {
            let problems = load(&firehose(&format!("{key} = \"localhost:4566\"")))
                .unwrap_err()
                .0;
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, format!("connectors.fh.{key}"));
        }
    }

    #[test]
    fn the_repo_configs_commented_out_overrides_are_valid() {
        let examples = [
            "endpoint = ",
            "access_key_id = ",
            "secret_access_key = ",
            "role_arn = ",
        ];
        let text: Vec<&str> = include_str!("../../../connectors.toml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if examples.iter().any(|k| rest.starts_with(k)) => rest,
                _ => l,
            })
            .collect();
        let lookup = |name: &str| {
            lookup(name).or_else(|| name.starts_with("FIREHOSE_").then(|| format!("{name}-x")))
        };
        let text = text.join("\n");
        let s = Settings::from_toml(&text, &lookup, false).unwrap_or_else(|e| panic!("{e}"));
        let tree = read_tree(&text, false).unwrap_or_else(|e| panic!("{e}"));
        for c in &s.connectors {
            assert!(
                tree["connectors"][&c.id]["endpoint"].is_string(),
                "{} has no endpoint example",
                c.id
            );
        }
        // The examples take their secrets from variables and use no deprecated key.
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn a_secret_written_in_the_file_is_a_warning_without_its_value() {
        let text = format!(
            r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "literal-hec-token"
[connectors.by-reference]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "${{SPLUNK_HEC_TOKEN}}"
[connectors.dd]
kind = "datadog_logs"
api_key = "literal-dd-key"
[connectors.dd-number]
kind = "datadog_logs"
api_key = 4242424242
[connectors.nr]
kind = "newrelic_events"
account_id = "42"
license_key = "literal-nr-license"
[connectors.nr-insert]
kind = "newrelic_events"
account_id = "42"
insert_key = "literal-nr-insert"
[connectors.fh]
kind = "kinesis_firehose"
delivery_stream = "s"
access_key_id = "literal-fh-akid"
secret_access_key = "literal-fh-secret"
[connectors.otlp]
kind = "otlp_logs"
endpoint = "https://otlp:4318/v1/logs"
[connectors.otlp.headers]
x-api-key = "literal-otlp-key"
x-by-reference = "${{DD_API_KEY}}"
"#
        );
        let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = s.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "connectors.hec.token",
                "connectors.dd.api_key",
                "connectors.dd-number.api_key",
                "connectors.nr.license_key",
                "connectors.nr-insert.insert_key",
                "connectors.fh.access_key_id",
                "connectors.fh.secret_access_key",
                "connectors.otlp.headers.x-api-key",
            ]
        );
        assert!(
            s.warnings[7]
                .message
                .contains("SWITCHYARD__CONNECTORS__OTLP__HEADERS__X-API-KEY"),
            "{}",
            s.warnings[7]
        );
        assert!(
            s.warnings[0]
                .message
                .contains("SWITCHYARD__CONNECTORS__HEC__TOKEN"),
            "{}",
            s.warnings[0]
        );
        let shown = format!("{:?}", s.warnings);
        assert!(
            !shown.contains("literal-") && !shown.contains("4242424242"),
            "{shown}"
        );
    }

    /// A directory of this test's own for secret files, removed when dropped.
    struct SecretDir(std::path::PathBuf);

    impl SecretDir {
        fn new(test: &str) -> SecretDir {
            let dir = std::env::temp_dir()
                .join(format!("switchyard-settings-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            SecretDir(dir)
        }

        /// Writes `text` to `name`; the path, as a `${file:…}` reference would give it.
        fn file(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for SecretDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn any_value_can_come_from_a_file_without_its_trailing_newline() {
        let dir = SecretDir::new("from-file");
        let token = dir.file("hec-token", "file-hec-token\n");
        let sasl = dir.file("sasl-password", "file-kafka-p4ss\r\n");
        let key_password = dir.file("key-password", "two-lines\n\n");
        let text = format!(
            r#"{KAFKA}
[kafka.options]
"security.protocol" = "SASL_SSL"
"sasl.password" = "${{file:{sasl}}}"
[dead_letter]
topic = "dead"
[dead_letter.options]
"sasl.password" = "${{KAFKA_PASSWORD}}"
[parking.options]
"ssl.key.password" = "${{file:{key_password}}}"
[connectors.hec]
kind = "splunk_hec"
endpoint = "https://hec:8088"
token = "${{file:{token}}}"
"#
        );
        let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let Some(hec) = s.connectors[0].kind.downcast_ref::<HecConfig>() else {
            panic!("HEC")
        };
        assert_eq!(hec.token.as_ref().unwrap().expose(), "file-hec-token");
        assert_eq!(s.kafka.options["sasl.password"], "file-kafka-p4ss");
        assert_eq!(s.dead_letter.options["sasl.password"], "env-kafka-p4ss");
        // Only the one newline a file ends with is not part of the secret.
        assert_eq!(s.parking.options["ssl.key.password"], "two-lines\n");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let debug = format!("{s:?}");
        for secret in [
            "file-hec-token",
            "file-kafka-p4ss",
            "env-kafka-p4ss",
            "two-lines",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("SASL_SSL"), "{debug}");
    }

    #[test]
    fn an_unreadable_secret_file_is_a_problem_of_its_key_unless_the_connector_is_disabled() {
        let missing = "/nonexistent/switchyard/secret";
        let text = |enabled: bool| {
            format!(
                r#"{KAFKA}
[kafka.options]
"sasl.password" = "${{file:{missing}}}"
[connectors.hec]
kind = "splunk_hec"
enabled = {enabled}
endpoint = "https://hec:8088"
token = "${{file:{missing}}}"
"#
            )
        };
        let problems = load(&text(true)).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["kafka.options.sasl.password", "connectors.hec.token"],
            "{problems:?}"
        );
        assert!(
            problems[1]
                .message
                .starts_with(&format!("file {missing} cannot be read: ")),
            "{problems:?}"
        );

        let disabled = text(false).replace(&format!("${{file:{missing}}}\"\n["), "x\"\n[");
        let s = load(&disabled).unwrap_or_else(|e| panic!("{e}"));
        let err = s.connectors[0].runnable().unwrap_err().to_string();
        assert!(
            err.contains("connectors.hec.token: file /nonexistent/switchyard/secret"),
            "{err}"
        );
    }

    #[test]
    fn a_kafka_credential_written_in_the_file_is_a_warning_without_its_value() {
        let text = format!(
            r#"{KAFKA}
[kafka.options]
"sasl.username" = "router"
"sasl.password" = "literal-kafka-p4ss"
"session.timeout.ms" = "6000"
[dead_letter.options]
"ssl.key.password" = "literal-key-p4ss"
[parking.options]
"sasl.password" = "${{KAFKA_PASSWORD}}"
"#
        );
        let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<&str> = s.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kafka.options.sasl.password",
                "dead_letter.options.ssl.key.password"
            ]
        );
        let shown = format!("{:?} {s:?}", s.warnings);
        assert!(
            !shown.contains("literal-") && !shown.contains("env-kafka"),
            "{shown}"
        );
    }

    fn hec_with(id: &str, extra: &str) -> String {
        format!(
            "[connectors.{id}]\nkind = \"splunk_hec\"\nendpoint = \"https://127.0.0.1:8088\"\ntoken = \"t\"\n{extra}\n"
        )
    }

    #[test]
    fn tls_files_and_proxy_are_read_and_checked_at_load() {
        let pki = switchyard_testkit::tls::Pki::generate();
        let (ca, cert, key) = (
            pki.ca_file().display().to_string(),
            pki.client_cert_file().display().to_string(),
            pki.client_key_file().display().to_string(),
        );
        let good = format!(
            "{KAFKA}{}",
            hec_with(
                "hec",
                &format!(
                    "proxy = \"http://user:proxy-p4ss@127.0.0.1:3128\"\n[connectors.hec.tls]\nca_file = \"{ca}\"\ntrust_system_roots = false\ncert_file = \"{cert}\"\nkey_file = \"{key}\""
                )
            )
        );
        let s = load(&good).unwrap_or_else(|e| panic!("{e}"));
        let client = format!("{:?}", s.connectors[0].client);
        assert!(
            client.contains("ca: true")
                && client.contains("system_roots: false")
                && client.contains("client_certificate: true")
                && client.contains("Url(http://127.0.0.1:3128)"),
            "{client}"
        );
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("PRIVATE KEY") && !debug.contains("proxy-p4ss"),
            "{debug}"
        );

        let tables = [
            hec_with(
                "missing",
                "[connectors.missing.tls]\nca_file = \"/nonexistent/ca.pem\"",
            ),
            hec_with(
                "unpaired",
                &format!("[connectors.unpaired.tls]\ncert_file = \"{cert}\""),
            ),
            hec_with(
                "mismatched",
                &format!("[connectors.mismatched.tls]\ncert_file = \"{ca}\"\nkey_file = \"{key}\""),
            ),
            hec_with(
                "not-a-ca",
                &format!("[connectors.not-a-ca.tls]\nca_file = \"{key}\""),
            ),
            hec_with(
                "no-roots",
                "[connectors.no-roots.tls]\ntrust_system_roots = false",
            ),
            hec_with("insecure", "[connectors.insecure.tls]\nverify = false"),
            hec_with("bad-proxy", "proxy = \"proxy:3128\""),
            format!(
                "[connectors.fh]\nkind = \"kinesis_firehose\"\ndelivery_stream = \"s\"\nproxy = \"none\"\n[connectors.fh.tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
            ),
        ];
        let problems = load(&format!("{KAFKA}{}", tables.concat())).unwrap_err().0;
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "connectors.missing.tls.ca_file",
            "connectors.unpaired.tls.cert_file",
            "connectors.mismatched.tls",
            "connectors.not-a-ca.tls.ca_file",
            "connectors.no-roots.tls.trust_system_roots",
            "connectors.insecure.tls.verify",
            "connectors.bad-proxy.proxy",
            "connectors.fh.tls.cert_file",
        ] {
            assert!(paths.contains(&want), "{want} missing from {problems:?}");
        }
        assert_eq!(problems.len(), 8, "{problems:?}");
        let shown = format!("{problems:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");

        // A disabled connector may name files this environment does not mount.
        let disabled = format!(
            "{KAFKA}{}",
            hec_with(
                "off",
                "enabled = false\n[connectors.off.tls]\nca_file = \"/nonexistent/ca.pem\""
            )
        );
        let s = load(&disabled).unwrap_or_else(|e| panic!("{e}"));
        let err = s.connectors[0].runnable().unwrap_err().to_string();
        assert!(
            err.contains("connectors.off.tls.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
