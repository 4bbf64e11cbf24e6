//! `[connectors.<id>]` settings of `kind = "newrelic_events"`.

use serde::Deserialize;
use std::time::Duration;
use switchyard_core::age::OutOfWindow;
use switchyard_core::compress::{Codec, Compression, codec_for};
use switchyard_core::{BatchLimits, Secret};
use switchyard_http::Url;

/// No count limit; bytes are the uncompressed estimate (the real limit, 10^6 bytes
/// compressed, is checked after compression and splits the batch if crossed).
pub const HARD_LIMITS: BatchLimits = BatchLimits {
    max_events: 100_000,
    max_bytes: 64_000_000,
    max_linger: Duration::from_secs(3600),
};

/// QoE JSON flattened compresses about 10:1, so 4 MB of flattened events stays well under
/// 10^6 compressed bytes.
pub const DEFAULT_LIMITS: BatchLimits = BatchLimits {
    max_events: 1000,
    max_bytes: 4_000_000,
    max_linger: Duration::from_secs(1),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

/// How arrays (which the Event API cannot store) become attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arrays {
    /// One attribute per element: `custom.webRTCStats.audio.inbounds.0.jitter`. Queryable in
    /// NRQL; the sample event flattens to 157 attributes this way, under the cap of 254.
    #[default]
    Flatten,
    /// The array as a JSON string (truncated at 4096 characters like any value).
    Json,
}

/// How booleans (not among the Event API's supported types) are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Booleans {
    /// `"true"` / `"false"`.
    #[default]
    String,
    /// `1` / `0`.
    Number,
}

/// New Relic drops events more than 24 h from its clock (either way); a minute's margin
/// covers the time in flight.
pub const MAX_SKEW: Duration = Duration::from_secs(24 * 3600 - 60);

/// What to do with an event New Relic would drop or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Truncate long values, drop attributes past the cap or with over-long names; each
    /// counted by reason.
    #[default]
    Truncate,
    /// Reject the whole event with the reason.
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRelicConfig {
    #[serde(default)]
    pub region: Region,
    /// An explicit base URL; overrides `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(
        default,
        deserialize_with = "switchyard_core::secret::string_or_number"
    )]
    pub account_id: String,
    /// A license key, sent as `Api-Key`.
    #[serde(default)]
    pub license_key: Option<Secret>,
    /// A legacy Insights insert key, sent as `X-Insert-Key`.
    #[serde(default)]
    pub insert_key: Option<Secret>,
    /// `eventType`: a name, or a template with `{event.type}`, e.g. `Qoe_{event.type}`.
    #[serde(default = "d_event_type")]
    pub event_type: String,
    #[serde(default)]
    pub arrays: Arrays,
    #[serde(default)]
    pub booleans: Booleans,
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// When an event has more attributes than New Relic keeps, these flattened names are kept
    /// first, after the ones that identify it (`event_id`, `customer_code`,
    /// `configuration_id`, `event.type`, `event.timestamp`): the session and user ids.
    #[serde(default = "d_keep_attributes")]
    pub keep_attributes: Vec<String>,
    /// An event more than 24 h from New Relic's clock: restamped (default), refused, or sent
    /// as is.
    #[serde(default)]
    pub out_of_window: OutOfWindow,
    /// `gzip` only: New Relic asks for compressed bodies and its 10^6-byte limit is on the
    /// body as sent.
    #[serde(default)]
    pub compression: Compression,
    /// gzip's level (1-9); unset, the default chosen for cost.
    #[serde(default)]
    pub compression_level: Option<i32>,
}

/// Always kept first, whatever `keep_attributes` says: what finds and de-duplicates an event.
pub const IDENTIFYING_ATTRIBUTES: [&str; 5] = [
    "event_id",
    "customer_code",
    "configuration_id",
    "event.type",
    "event.timestamp",
];

fn d_keep_attributes() -> Vec<String> {
    [
        "user_details.content_session_id",
        "user_details.app_session_id",
        "device.device_id",
    ]
    .map(String::from)
    .to_vec()
}

fn d_event_type() -> String {
    "QoeEvent".into()
}

pub const TEMPLATE: &str = "{event.type}";

impl NewRelicConfig {
    /// What the Event API takes as `Content-Encoding` that the router sends (deflate too, but
    /// gzip is as small and every fake and proxy knows it).
    pub const ACCEPTS: [Compression; 1] = [Compression::Gzip];

    /// How request bodies are compressed, or the key at fault and why.
    pub fn codec(&self) -> Result<Codec, (&'static str, String)> {
        codec_for(
            self.compression,
            self.compression_level,
            "New Relic's Event API (it asks for compressed bodies)",
            &Self::ACCEPTS,
        )
    }

    pub fn events_url(&self) -> Result<Url, String> {
        let base = match (&self.endpoint, self.region) {
            (Some(e), _) => e.trim_end_matches('/').to_string(),
            (None, Region::Us) => "https://insights-collector.newrelic.com".into(),
            (None, Region::Eu) => "https://insights-collector.eu01.nr-data.net".into(),
        };
        switchyard_http::endpoint_url(&format!("{base}/v1/accounts/{}/events", self.account_id))
            .map_err(|e| format!("endpoint: {e}"))
    }

    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = self.codec() {
            out.push(problem);
        }
        if self.account_id.is_empty() || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            out.push((
                "account_id",
                format!("must be the numeric account id, not {:?}", self.account_id),
            ));
        } else if let Err(e) = self.events_url() {
            out.push(("endpoint", e.trim_start_matches("endpoint: ").to_string()));
        }
        match (&self.license_key, &self.insert_key) {
            (None, None) => out.push(("license_key", "set license_key (or insert_key)".into())),
            (Some(_), Some(_)) => out.push((
                "insert_key",
                "set only one of license_key and insert_key".into(),
            )),
            (Some(k), None) | (None, Some(k)) if k.is_empty() => {
                out.push(("license_key", "is empty".into()))
            }
            _ => {}
        }
        if let Err(e) = check_event_type(&self.event_type.replace(TEMPLATE, "X")) {
            out.push(("event_type", e));
        }
        out
    }
}

/// The Event API's rules for `eventType`.
pub fn check_event_type(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 255 {
        return Err(format!("{t:?} must be 1 to 255 characters"));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("{t:?} may hold only letters, digits, '_' and ':'"));
    }
    let reserved = t == "Metric"
        || t == "MetricRaw"
        || t.starts_with("Public_")
        || t.strip_prefix("Metric")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    if reserved {
        return Err(format!(
            "{t:?} is reserved by New Relic (events would be dropped)"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn config() -> NewRelicConfig {
        NewRelicConfig {
            region: Region::Us,
            endpoint: None,
            account_id: "1234567".into(),
            license_key: Some(Secret::new("license")),
            insert_key: None,
            event_type: d_event_type(),
            arrays: Arrays::Flatten,
            booleans: Booleans::String,
            on_invalid: OnInvalid::Truncate,
            keep_attributes: d_keep_attributes(),
            out_of_window: OutOfWindow::SendAsIs,
            compression: Compression::Gzip,
            compression_level: None,
        }
    }

    #[test]
    fn regions_and_endpoint() {
        let mut c = config();
        assert_eq!(
            c.events_url().unwrap().as_str(),
            "https://insights-collector.newrelic.com/v1/accounts/1234567/events"
        );
        c.region = Region::Eu;
        assert_eq!(
            c.events_url().unwrap().as_str(),
            "https://insights-collector.eu01.nr-data.net/v1/accounts/1234567/events"
        );
        c.endpoint = Some("http://127.0.0.1:9/".into());
        assert_eq!(
            c.events_url().unwrap().as_str(),
            "http://127.0.0.1:9/v1/accounts/1234567/events"
        );
        assert!(c.problems().is_empty());
    }

    #[test]
    fn problems_are_listed() {
        let mut c = config();
        c.account_id = "acct".into();
        c.insert_key = Some(Secret::new("x"));
        c.event_type = "Qoe.Event".into();
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["account_id", "insert_key", "event_type"]);
        for bad in ["Metric", "Metric12", "Public_Foo", ""] {
            assert!(check_event_type(bad).is_err(), "{bad}");
        }
        assert!(check_event_type("Qoe_rendition_change").is_ok());
        assert!(check_event_type("Metrics").is_ok());
    }

    #[test]
    fn compression_takes_what_the_api_accepts_at_a_checked_level() {
        let mut c = config();
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
            why.starts_with("\"zstd\" is not accepted by New Relic's Event API"),
            "{why}"
        );
        c.compression = Compression::None;
        assert_eq!(c.problems()[0].0, "compression");
    }
}
