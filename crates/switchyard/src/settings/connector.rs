//! The `[connectors.<id>]` tables: the keys every connector has, and the kind's own keys
//! through its descriptor in the registry.

use super::*;

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
    /// The destination account's limit, kept by each instance (each customer's) alone.
    #[serde(default)]
    rate_limit: Option<RateLimitSection>,
    /// The share of sessions this connector takes, in (0, 1] (docs/payloads.md).
    #[serde(default)]
    sample_rate: Option<f64>,
    /// The dotted path of the session id sampling hashes.
    #[serde(default)]
    sample_key: Option<String>,
    /// The document this connector sends (docs/payloads.md); unset: the raw event.
    #[serde(default)]
    fields: Option<FieldsSection>,
}

/// `fields = { include = […], exclude = […], rename = { "from" = "to" }, add = { … } }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsSection {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    add: Map<String, Value>,
}

/// `rate_limit = { events_per_sec = N }` or `{ requests_per_sec = N }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSection {
    events_per_sec: Option<u32>,
    requests_per_sec: Option<u32>,
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

const COMMON_KEYS: [&str; 17] = [
    "fields",
    "sample_rate",
    "sample_key",
    "health_check",
    "rate_limit",
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

pub(super) fn connectors(
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
    table
        .into_iter()
        .filter_map(|(id, v)| {
            let path = format!("connectors.{id}");
            connector_entry(id, v, &path, lookup, problems, warnings)
        })
        .collect()
}

/// One `[connectors.<id>]` table as it is written (before `${…}` references), reported
/// under `path`.
pub(super) fn connector_entry(
    id: String,
    value: Value,
    path: &str,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<ConnectorSettings> {
    let Value::Object(fields) = value else {
        problems.push(Problem::new(path, "must be a table"));
        return None;
    };
    let mut unset = Vec::new();
    let fields = interpolate_map(fields, path, lookup, problems, &mut unset);
    // A disabled connector does not run, so the variables it would need may be absent
    // (as when it is switched off by an override in an environment without its secrets).
    // Its other mistakes are still reported.
    let enabled = fields
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut found = Vec::new();
    let fingerprint = fingerprint(&fields);
    let connector = connector(id, path, fields, &mut found, &mut unset, warnings);
    if enabled {
        problems.extend(unset.iter().cloned());
    } else {
        // What an unset variable's empty value trips is not a problem either.
        found.retain(|p| !unset.iter().any(|u| u.path == p.path));
    }
    problems.append(&mut found);
    let mut c = connector?;
    c.unset_variables = unset;
    c.fingerprint = fingerprint;
    Some(c)
}

/// A digest of a connector's table with every reference resolved: equal exactly when the
/// settings (secrets included) are. It never leaves the process.
fn fingerprint(fields: &Map<String, Value>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // Maps keep the file's order: the same file prints alike; keys merely reordered count as
    // a change, which costs one instance restart.
    Value::Object(fields.clone()).to_string().hash(&mut h);
    h.finish()
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
    let fields = field_selection(common.fields.as_ref(), path, problems);
    let mut engine = engine_settings(&common, defaults, path, problems)?;
    engine.fields = fields?;
    warnings.extend(over_hard_limits(engine.limits, descriptor, path));
    let isolation = isolation_settings(&common, path, problems)?;
    let sample = sample(&common, path, problems)?;
    Some(ConnectorSettings {
        id,
        enabled: common.enabled,
        filter: Filter {
            sample,
            ..filter(common.filter)
        },
        engine,
        isolation,
        kind: kind?,
        client,
        unset_variables: Vec::new(),
        fingerprint: 0,
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
    let options = ClientOptions::new(tls, proxy);
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

fn rate_limit(r: &RateLimitSection, path: &str, problems: &mut Vec<Problem>) -> Option<RateLimit> {
    use std::num::NonZeroU32;
    let key = format!("{path}.rate_limit");
    match (r.events_per_sec, r.requests_per_sec) {
        (Some(n), None) => match NonZeroU32::new(n) {
            Some(n) => Some(RateLimit::EventsPerSec(n)),
            None => {
                problems.push(Problem::new(
                    &format!("{key}.events_per_sec"),
                    "must be at least 1",
                ));
                None
            }
        },
        (None, Some(n)) => match NonZeroU32::new(n) {
            Some(n) => Some(RateLimit::RequestsPerSec(n)),
            None => {
                problems.push(Problem::new(
                    &format!("{key}.requests_per_sec"),
                    "must be at least 1",
                ));
                None
            }
        },
        _ => {
            problems.push(Problem::new(
                &key,
                "sets exactly one of events_per_sec and requests_per_sec",
            ));
            None
        }
    }
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
    let rate_limit = c
        .rate_limit
        .as_ref()
        .and_then(|r| rate_limit(r, path, problems));
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
        rate_limit,
        health_check: HealthCheck {
            enabled: c.health_check.enabled,
            interval: Duration::from_secs(c.health_check.interval_secs),
        },
        fields: None,
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
        sample: None,
    }
}

/// `sample_rate` and `sample_key`: Some(None) without sampling, None after a problem.
/// `sample_key` alone is a problem: it would silently do nothing.
fn sample(c: &CommonSection, path: &str, problems: &mut Vec<Problem>) -> Option<Option<Sample>> {
    let key = c.sample_key.as_deref();
    let Some(rate) = c.sample_rate else {
        if key.is_some() {
            problems.push(Problem::new(
                &format!("{path}.sample_key"),
                "is set without sample_rate; set both, or neither",
            ));
            return None;
        }
        return Some(None);
    };
    match Sample::new(rate, key.unwrap_or(DEFAULT_SAMPLE_KEY)) {
        Ok(s) => Some(Some(s)),
        Err(e) => {
            let at = match e {
                SampleError::Rate(_) => "sample_rate",
                SampleError::Key(_) => "sample_key",
            };
            problems.push(Problem::new(&format!("{path}.{at}"), &e.to_string()));
            None
        }
    }
}

/// The `fields` table: Some(None) when unset or empty (nothing to change, so the raw event
/// goes, at no cost), None after a problem.
fn field_selection(
    f: Option<&FieldsSection>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Option<Arc<FieldSelection>>> {
    let Some(f) = f else {
        return Some(None);
    };
    if f.include.is_empty() && f.exclude.is_empty() && f.rename.is_empty() && f.add.is_empty() {
        return Some(None);
    }
    let rename: Vec<(String, String)> = f
        .rename
        .iter()
        .map(|(from, to)| (from.clone(), to.clone()))
        .collect();
    let add: Vec<(String, Value)> = f.add.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    match FieldSelection::new(&f.include, &f.exclude, &rename, &add) {
        Ok(s) => Some(Some(Arc::new(s))),
        Err(errors) => {
            for e in errors {
                problems.push(Problem::new(
                    &format!("{path}.fields.{}", e.key()),
                    &e.to_string(),
                ));
            }
            None
        }
    }
}
