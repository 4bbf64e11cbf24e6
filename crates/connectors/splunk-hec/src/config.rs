//! `[connectors.<id>]` settings of `kind = "splunk_hec"`.

use serde::Deserialize;
use std::time::Duration;
use switchyard_core::compress::Compression;
use switchyard_core::{BatchLimits, Secret};
use switchyard_http::Url;

pub const EVENT_PATH: &str = "/services/collector/event";
pub const HEALTH_PATH: &str = "/services/collector/health";

/// Batches when nothing is configured: 1 MB keeps requests under Splunk Cloud's commonly
/// cited request limit, so the same config works for Cloud and Enterprise.
pub const DEFAULT_LIMITS: BatchLimits = BatchLimits {
    max_events: 1000,
    max_bytes: 1_000_000,
    max_linger: Duration::from_secs(1),
};

/// Splunk Enterprise's default `max_content_length` (800 MiB); HEC has no count limit.
pub const HARD_LIMITS: BatchLimits = BatchLimits {
    max_events: usize::MAX,
    max_bytes: 838_860_800,
    max_linger: Duration::from_secs(3600),
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HecConfig {
    /// Base URL, e.g. `https://splunk.example.com:8088`.
    pub endpoint: String,
    /// The HEC token (a GUID). Put `${SPLUNK_HEC_TOKEN}` in the file, not the value.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub index: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// `_json` makes Splunk extract the event's fields at search time.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub compression: Compression,
}

fn default_sourcetype() -> Option<String> {
    Some("_json".into())
}

impl HecConfig {
    /// The `/services/collector/event` URL under `endpoint`.
    pub fn event_url(&self) -> Result<Url, String> {
        switchyard_http::endpoint_url(&self.endpoint)?
            .join(EVENT_PATH)
            .map_err(|e| e.to_string())
    }

    /// Every problem with these settings, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = self.event_url() {
            out.push(("endpoint", e));
        }
        match &self.token {
            None => out.push(("token", "is missing".into())),
            Some(t) if t.is_empty() => out.push(("token", "is empty".into())),
            Some(_) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, token: Option<&str>) -> HecConfig {
        HecConfig {
            endpoint: endpoint.into(),
            token: token.map(Secret::new),
            index: None,
            source: None,
            sourcetype: default_sourcetype(),
            host: None,
            compression: Compression::Gzip,
        }
    }

    #[test]
    fn event_url_is_under_the_endpoint() {
        let c = cfg("https://splunk:8088", Some("t"));
        assert_eq!(
            c.event_url().unwrap().as_str(),
            "https://splunk:8088/services/collector/event"
        );
        assert!(c.problems().is_empty());
    }

    #[test]
    fn problems_are_all_listed() {
        let p = cfg("ftp://x", None).problems();
        assert_eq!(
            p.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["endpoint", "token"]
        );
        assert_eq!(cfg("not a url", Some(" ")).problems().len(), 2);
    }
}
