//! `connectors.toml`: loading (file, `${VAR}` and `${file:PATH}` references, `SWITCHYARD__…`
//! overrides) and validation that reports every problem at once, each with its key path.
//!
//! [`connector`] reads the `[connectors.<id>]` tables through the destination registry,
//! [`interpolate`] resolves `${NAME}` and `${file:PATH}`, and [`secrets`] warns about
//! credentials written in the file.

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
    BatchLimits, DEFAULT_SAMPLE_KEY, EngineSettings, FieldSelection, Filter, HealthCheck,
    IsolationSettings, OnExhausted, RateLimit, RetryPolicy, Sample, SampleError,
};
use switchyard_destination::{ConnectorConfig, Descriptor};
use switchyard_http::{ClientOptions, Proxy, Tls, TlsFiles};
use switchyard_kafka::settings::{KafkaSection, Scalar};
use switchyard_kafka::{KafkaOptions, SourceConfig};

mod connector;
mod interpolate;
mod secrets;
mod tenants;
#[cfg(test)]
mod tests;

use connector::{connector_entry, connectors};
use interpolate::interpolate_map;
use secrets::literal_secrets;
pub use switchyard_core::Problem;
use switchyard_core::config::typed;
pub use tenants::{Tenant, Tenants, Unknown};

/// Everything wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
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
    /// Customers' own instances of the connectors (docs/tenancy.md).
    pub tenants: Tenants,
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
    /// The events one array record may hold (docs/payloads.md).
    pub max_array_members: usize,
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
    /// A digest of its table with every reference resolved: a reload replaces a running
    /// instance only when this changes.
    pub fingerprint: u64,
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
    /// A string for endpoints and credentials; a number or boolean where the key takes one.
    pub value: Value,
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
        Self::load_with_tenants(path, lookup, overrides, None)
    }

    /// As [`Settings::load_with`]; where the file has no `[tenants]` section, `tenants` is
    /// read as its tenant directory (the demo's own tenants).
    pub fn load_with_tenants(
        path: &str,
        lookup: Lookup<'_>,
        overrides: &[ConnectorOverride],
        tenants: Option<&std::path::Path>,
    ) -> Result<Settings, Invalid> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Invalid(vec![Problem {
                path: path.into(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, lookup, true, overrides, tenants)
    }

    /// Parses TOML text; `env_overrides` applies `SWITCHYARD__SECTION__KEY` variables.
    pub fn from_toml(
        text: &str,
        lookup: Lookup<'_>,
        env_overrides: bool,
    ) -> Result<Settings, Invalid> {
        Self::parse(text, lookup, env_overrides, &[], None)
    }

    /// As [`Settings::from_toml`] without `SWITCHYARD__…` variables, with `overrides`.
    pub fn from_toml_with(
        text: &str,
        lookup: Lookup<'_>,
        overrides: &[ConnectorOverride],
    ) -> Result<Settings, Invalid> {
        Self::parse(text, lookup, false, overrides, None)
    }

    fn parse(
        text: &str,
        lookup: Lookup<'_>,
        env_overrides: bool,
        overrides: &[ConnectorOverride],
        tenants: Option<&std::path::Path>,
    ) -> Result<Settings, Invalid> {
        let file = read_tree(text, false)?;
        let mut tree = if env_overrides {
            read_tree(text, true)?
        } else {
            file.clone()
        };
        if let (Some(dir), Value::Object(root)) = (tenants, &mut tree) {
            root.entry("tenants")
                .or_insert_with(|| serde_json::json!({ "directory": dir }));
        }
        for o in overrides {
            if let Some(c) = tree.get_mut("connectors").and_then(|c| c.get_mut(&o.id)) {
                set_dotted(c, o.key, o.value.clone());
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
        let tenants_section = section::<tenants::TenantsSection>(&mut root, "tenants", problems);
        let written = match &connectors_table {
            Some(Value::Object(t)) => t.clone(),
            _ => Map::new(),
        };
        let connectors = connectors(connectors_table, lookup, problems, warnings);
        let tenants = tenants_section
            .map(|t| tenants::load(t, &written, lookup, problems, warnings))
            .unwrap_or_default();
        for key in root.keys() {
            problems.push(Problem::new(
                key,
                "unknown section (expected kafka, router, admin, dead_letter, parking, tenants, connectors)",
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
        if router.max_array_members == 0 {
            problems.push(Problem::new(
                "router.max_array_members",
                "must be at least 1",
            ));
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
                max_array_members: router.max_array_members,
            },
            connectors,
            tenants,
            warnings: Vec::new(),
        })
    }
}

/// Sets `key` (dotted: `a.b` is key `b` of table `a`, made if absent) in `table` to `value`.
fn set_dotted(table: &mut Value, key: &str, value: Value) {
    let mut at = table;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Object(map) = at else { return };
        if parts.peek().is_none() {
            map.insert(part.into(), value);
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouterSection {
    /// Connectors for events without a `connector_list`.
    #[serde(default)]
    default_connectors: Vec<String>,
    #[serde(default = "d_max_event_bytes")]
    max_event_bytes: usize,
    #[serde(default = "d_max_array_members")]
    max_array_members: usize,
    #[serde(default = "d_shutdown")]
    shutdown_timeout_secs: u64,
}

fn d_max_event_bytes() -> usize {
    1 << 20
}
fn d_max_array_members() -> usize {
    1_000
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

fn d_true() -> bool {
    true
}
