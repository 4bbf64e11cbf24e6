//! The tenant directory (docs/tenancy.md): one file per `customer_code`, each overriding, per
//! connector id, what differs for that customer. Every tenant instance is the connector's table
//! with the tenant's on top, read exactly as a connector of `connectors.toml` is.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;

/// `[tenants]` in `connectors.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantsSection {
    #[serde(default)]
    directory: Option<PathBuf>,
    #[serde(default)]
    unknown: Unknown,
    /// A customer's instance with no event for this long is flushed and closed.
    #[serde(default = "default_idle_after_secs")]
    idle_after_secs: u64,
    /// How many customers get metric series of their own (per connector); 0: none.
    #[serde(default)]
    metrics_label_limit: usize,
}

fn default_idle_after_secs() -> u64 {
    300
}

/// What a customer without a tenant file gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// The connector's own instance (the operator's account).
    #[default]
    Default,
    /// Its events are dead-lettered, with the reason `no_tenant`.
    Reject,
}

/// The tenants as loaded.
#[derive(Debug, Clone, Default)]
pub struct Tenants {
    pub directory: Option<PathBuf>,
    pub unknown: Unknown,
    /// A customer's instance with no event for this long is flushed and closed.
    pub idle_after: Duration,
    /// How many customers get metric series of their own (per connector); 0: none.
    pub metrics_label_limit: usize,
    /// By `customer_code`.
    pub by_customer: BTreeMap<String, Tenant>,
}

/// One customer's instances.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub customer_code: String,
    pub file: PathBuf,
    /// The connectors its file names, each the connector's settings with the file's on top.
    pub connectors: Vec<ConnectorSettings>,
}

impl Tenants {
    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
    }
}

/// Keys a tenant file may not set: the kind, and the delivery knobs the operator sizes for
/// the pod (docs/tenancy.md).
const OPERATOR_KEYS: [&str; 10] = [
    "kind",
    "batch",
    "retry",
    "concurrency",
    "timeout_secs",
    "detach_after_secs",
    "probe_max_interval_secs",
    "append_observability",
    "health_check",
    "proxy",
];

/// Reads the directory `section` names. `base` holds the `[connectors.<id>]` tables as
/// written (before `${…}` references); each tenant's table is merged over its connector's.
pub(super) fn load(
    section: TenantsSection,
    base: &Map<String, Value>,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Tenants {
    let mut tenants = Tenants {
        directory: section.directory.clone(),
        unknown: section.unknown,
        idle_after: Duration::from_secs(section.idle_after_secs),
        metrics_label_limit: section.metrics_label_limit,
        by_customer: BTreeMap::new(),
    };
    if section.idle_after_secs == 0 {
        problems.push(Problem::new(
            "tenants.idle_after_secs",
            "must be at least 1 (seconds without an event before a customer's instance closes)",
        ));
    }
    let Some(dir) = section.directory else {
        return tenants;
    };
    let files = match tenant_files(&dir) {
        Ok(files) => files,
        Err(message) => {
            problems.push(Problem::new("tenants.directory", &message));
            return tenants;
        }
    };
    for file in files {
        if let Some(tenant) = tenant(&file, base, lookup, problems, warnings) {
            tenants
                .by_customer
                .insert(tenant.customer_code.clone(), tenant);
        }
    }
    tenants
}

/// The directory's `*.toml` files, in name order.
fn tenant_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{} cannot be read: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("{} cannot be read: {e}", dir.display()))?
            .path();
        // Kubernetes mounts a ConfigMap's keys through `..data` symlinks and dot-directories;
        // only the files themselves are tenants.
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A customer code a file name may carry: no path, no dot first, nothing a shell or a URL
/// would read differently.
fn valid_customer_code(code: &str) -> bool {
    !code.is_empty()
        && !code.starts_with('.')
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn tenant(
    file: &Path,
    base: &Map<String, Value>,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<Tenant> {
    let name = file.display().to_string();
    let code = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if !valid_customer_code(code) {
        problems.push(Problem::new(
            &name,
            "is not named after a customer code (letters, digits, '.', '_' and '-', not starting with '.')",
        ));
        return None;
    }
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem::new(&name, &format!("cannot be read: {e}")));
            return None;
        }
    };
    let tree = match read_tree(&text, false) {
        Ok(Value::Object(tree)) => tree,
        Ok(_) => {
            problems.push(Problem::new(&name, "is not a table"));
            return None;
        }
        Err(Invalid(found)) => {
            for p in found {
                problems.push(Problem::new(&name, &p.message));
            }
            return None;
        }
    };
    let mut connectors = Vec::new();
    for (key, value) in tree {
        if key != "connectors" {
            problems.push(Problem::new(
                &format!("{name}: {key}"),
                "unknown section (a tenant file holds [connectors.<id>] tables only)",
            ));
            continue;
        }
        let Value::Object(tables) = value else {
            problems.push(Problem::new(
                &format!("{name}: connectors"),
                "must be a table",
            ));
            continue;
        };
        for (id, overrides) in tables {
            let path = format!("{name}: connectors.{id}");
            if let Some(c) = instance(&id, &path, overrides, base, lookup, problems, warnings) {
                connectors.push(c);
            }
        }
    }
    Some(Tenant {
        customer_code: code.to_string(),
        file: file.to_path_buf(),
        connectors,
    })
}

/// Connector `id`'s instance for one tenant: its table in `connectors.toml` with `overrides`
/// on top, reported under `path`.
fn instance(
    id: &str,
    path: &str,
    overrides: Value,
    base: &Map<String, Value>,
    lookup: Lookup<'_>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Option<ConnectorSettings> {
    let Some(Value::Object(table)) = base.get(id) else {
        problems.push(Problem::new(
            path,
            "names no connector of connectors.toml (a tenant overrides a connector; it cannot add one)",
        ));
        return None;
    };
    let Value::Object(overrides) = overrides else {
        problems.push(Problem::new(path, "must be a table"));
        return None;
    };
    let before = problems.len();
    for key in OPERATOR_KEYS {
        if overrides.contains_key(key) {
            problems.push(Problem::new(
                &format!("{path}.{key}"),
                "is the operator's to set in connectors.toml, not a tenant's",
            ));
        }
    }
    let kind = table.get("kind").and_then(Value::as_str).unwrap_or("");
    let secret_keys = crate::destinations::find(kind).map_or(&[][..], |d| d.secret_keys);
    for literal in secrets::literal_in_table(&overrides, secret_keys) {
        problems.push(Problem::new(
            &format!("{path}.{literal}"),
            "is a credential written in a tenant file, which a ConfigMap does not keep secret; \
             use a ${NAME} or ${file:PATH} reference",
        ));
    }
    if problems.len() > before {
        return None;
    }
    let mut merged = Value::Object(table.clone());
    merge(&mut merged, Value::Object(overrides));
    connector_entry(id.to_string(), merged, path, lookup, problems, warnings)
}

/// Writes `over` onto `base`, table by table and key by key.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(b) => merge(b, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}
