//! Credentials written in the file itself rather than referenced: warned about, never shown.

use super::*;

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
pub(super) fn literal_secrets(file: &Value, merged: &Value) -> Vec<Problem> {
    let mut out = literal_kafka_secrets(file);
    let Some(Value::Object(connectors)) = merged.get("connectors") else {
        return out;
    };
    for (id, connector) in connectors {
        let kind = connector.get("kind").and_then(Value::as_str).unwrap_or("");
        let secret_keys = crate::destinations::find(kind).map_or(&[][..], |d| d.secret_keys);
        let Some(written) = file.get("connectors").and_then(|c| c.get(id)) else {
            continue;
        };
        for (key, value) in secret_entries(written, secret_keys) {
            // An override replaces the file's value, which is then never used.
            let merged = key.split('.').try_fold(connector, |v, k| v.get(k));
            if is_literal(value) && merged == Some(value) {
                out.push(literal_secret(id, &key));
            }
        }
    }
    out
}

/// The keys of `table` (a connector's table) that hold a credential written as it is, dotted
/// for a table of secrets (OTLP's headers hold one in each value).
pub(super) fn literal_in_table(table: &Map<String, Value>, secret_keys: &[&str]) -> Vec<String> {
    let table = Value::Object(table.clone());
    secret_entries(&table, secret_keys)
        .into_iter()
        .filter(|(_, v)| is_literal(v))
        .map(|(k, _)| k)
        .collect()
}

/// The credentials `connector` holds, as (key, value): a secret key's value, or each value of
/// a secret key that is a table.
fn secret_entries<'a>(connector: &'a Value, secret_keys: &[&str]) -> Vec<(String, &'a Value)> {
    let mut out = Vec::new();
    for &key in secret_keys {
        match connector.get(key) {
            Some(Value::Object(table)) => {
                out.extend(table.iter().map(|(name, v)| (format!("{key}.{name}"), v)));
            }
            Some(v) => out.push((key.to_string(), v)),
            None => {}
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
