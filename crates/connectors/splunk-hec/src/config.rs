//! `[connectors.<id>]` settings of `kind = "splunk_hec"`.

use serde::Deserialize;
use std::time::Duration;
use switchyard_core::compress::{Codec, Compression, codec_for};
use switchyard_core::{BatchLimits, Secret};
use switchyard_http::Url;

pub const EVENT_PATH: &str = "/services/collector/event";
pub const HEALTH_PATH: &str = "/services/collector/health";
pub const ACK_PATH: &str = "/services/collector/ack";

/// Between two polls of `/services/collector/ack`, as Vector.
pub const DEFAULT_ACK_POLL_INTERVAL_SECS: u64 = 10;
/// Ack ids awaiting acknowledgement at once.
pub const DEFAULT_ACK_MAX_PENDING: usize = 1000;
/// An ack id unacknowledged this long is given up on and its events sent again (Vector gives
/// up after 30 polls of 10 s; 300 s is the same).
pub const DEFAULT_ACK_TIMEOUT_SECS: u64 = 300;

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
    /// `gzip` (default), `none`.
    #[serde(default)]
    pub compression: Compression,
    /// The algorithm's level (gzip 1-9, zstd 1-19); unset, the default chosen for cost.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Indexer acknowledgement: events count as delivered only once Splunk says they are
    /// indexed (the token must have it on). Off: a 200 is delivery, as before.
    #[serde(default)]
    pub ack: bool,
    #[serde(default = "default_ack_poll_interval_secs")]
    pub ack_poll_interval_secs: u64,
    #[serde(default = "default_ack_max_pending")]
    pub ack_max_pending: usize,
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
}

fn default_ack_poll_interval_secs() -> u64 {
    DEFAULT_ACK_POLL_INTERVAL_SECS
}

fn default_ack_max_pending() -> usize {
    DEFAULT_ACK_MAX_PENDING
}

fn default_ack_timeout_secs() -> u64 {
    DEFAULT_ACK_TIMEOUT_SECS
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

    /// The `/services/collector/ack` URL under `endpoint`.
    pub fn ack_url(&self) -> Result<Url, String> {
        switchyard_http::endpoint_url(&self.endpoint)?
            .join(ACK_PATH)
            .map_err(|e| e.to_string())
    }

    /// How acknowledgements are polled, when `ack` is on.
    pub fn confirmation(&self) -> Option<switchyard_core::ConfirmSettings> {
        self.ack.then(|| switchyard_core::ConfirmSettings {
            poll_interval: Duration::from_secs(self.ack_poll_interval_secs),
            max_pending: self.ack_max_pending,
            timeout: Duration::from_secs(self.ack_timeout_secs),
        })
    }

    /// The algorithms the API accepts as `Content-Encoding` (docs/performance.md, "Compression, chosen for cost").
    pub const ACCEPTS: [Compression; 2] = [Compression::Gzip, Compression::None];

    /// How request bodies are compressed, or the key at fault and why.
    pub fn codec(&self) -> Result<Codec, (&'static str, String)> {
        codec_for(
            self.compression,
            self.compression_level,
            "Splunk HEC",
            &Self::ACCEPTS,
        )
    }

    /// Every problem with these settings, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = self.codec() {
            out.push(problem);
        }
        if let Err(e) = self.event_url() {
            out.push(("endpoint", e));
        }
        match &self.token {
            None => out.push(("token", "is missing".into())),
            Some(t) if t.is_empty() => out.push(("token", "is empty".into())),
            Some(_) => {}
        }
        // Checked with `ack` off too, so turning it on later cannot surprise.
        if self.ack_poll_interval_secs == 0 {
            out.push(("ack_poll_interval_secs", "must be at least 1".into()));
        }
        if self.ack_max_pending == 0 {
            out.push(("ack_max_pending", "must be at least 1".into()));
        }
        if self.ack_timeout_secs <= self.ack_poll_interval_secs {
            out.push((
                "ack_timeout_secs",
                format!(
                    "must be longer than ack_poll_interval_secs ({}), or no poll comes before it",
                    self.ack_poll_interval_secs
                ),
            ));
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
            compression_level: None,
            ack: false,
            ack_poll_interval_secs: DEFAULT_ACK_POLL_INTERVAL_SECS,
            ack_max_pending: DEFAULT_ACK_MAX_PENDING,
            ack_timeout_secs: DEFAULT_ACK_TIMEOUT_SECS,
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

    #[test]
    fn ack_is_off_by_default_and_its_knobs_default_as_documented() {
        let c: HecConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "https://splunk:8088", "token": "t"
        }))
        .unwrap();
        assert!(!c.ack);
        assert_eq!(c.confirmation(), None, "without ack, answers are final");
        let on = HecConfig { ack: true, ..c };
        assert_eq!(
            on.confirmation(),
            Some(switchyard_core::ConfirmSettings {
                poll_interval: Duration::from_secs(10),
                max_pending: 1000,
                timeout: Duration::from_secs(300),
            })
        );
        assert_eq!(
            on.ack_url().unwrap().as_str(),
            "https://splunk:8088/services/collector/ack"
        );
    }

    #[test]
    fn ack_knobs_are_checked_by_key() {
        let c = HecConfig {
            ack: true,
            ack_poll_interval_secs: 0,
            ack_max_pending: 0,
            ack_timeout_secs: 0,
            ..cfg("https://splunk:8088", Some("t"))
        };
        assert_eq!(
            c.problems().iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [
                "ack_poll_interval_secs",
                "ack_max_pending",
                "ack_timeout_secs"
            ]
        );
        let c = HecConfig {
            ack_poll_interval_secs: 30,
            ack_timeout_secs: 30,
            ..cfg("https://splunk:8088", Some("t"))
        };
        assert_eq!(c.problems()[0].0, "ack_timeout_secs");
    }

    #[test]
    fn compression_takes_what_the_api_accepts_at_a_checked_level() {
        let mut c = cfg("https://splunk:8088", Some("t"));
        assert_eq!(
            c.codec(),
            Ok(Codec::Gzip {
                level: switchyard_core::compress::GZIP_LEVEL
            })
        );
        c.compression_level = Some(9);
        assert_eq!(c.codec(), Ok(Codec::Gzip { level: 9 }));
        c.compression_level = Some(10);
        assert_eq!(
            c.problems()[0],
            (
                "compression_level",
                "10 is not a gzip level (it takes 1 to 9)".to_string()
            )
        );
        c.compression_level = None;
        c.compression = Compression::Zstd;
        let (key, why) = c.problems().remove(0);
        assert_eq!(key, "compression");
        assert!(
            why.starts_with("\"zstd\" is not accepted by Splunk HEC"),
            "{why}"
        );
        c.compression = Compression::None;
        assert_eq!(c.codec(), Ok(Codec::None));
    }
}
