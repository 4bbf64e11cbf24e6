//! What every part of the configuration reports when it is wrong: a [`Problem`] with the key
//! path a user can find in the file. Each section (Kafka, a destination kind, the router)
//! checks itself and pushes its problems; the loader lists them all at once.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `connectors.dz-connector-splunk.token`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: &str, message: &str) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Deserializes `value`, found at `path`, as `T`; on failure pushes one problem naming the
/// exact key that failed (`path.batch.max_events`), not just the section.
pub fn typed<T: DeserializeOwned>(
    value: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                path.to_string()
            } else {
                format!("{path}.{inner}")
            };
            problems.push(Problem {
                path,
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[allow(dead_code)]
        inner: Inner,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        n: u32,
    }

    #[test]
    fn a_type_error_names_the_key_inside_the_section() {
        let mut problems = Vec::new();
        let v = serde_json::json!({"inner": {"n": "x"}});
        assert!(typed::<Section>(v, "a.b", &mut problems).is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "a.b.inner.n");
        let mut problems = Vec::new();
        assert!(typed::<Section>(serde_json::json!([]), "a", &mut problems).is_none());
        assert_eq!(problems[0].path, "a");
    }
}
