//! `[connectors.<id>]` settings of `kind = "datadog_logs"`.

use serde::Deserialize;
use std::time::Duration;
use switchyard_core::age::OutOfWindow;
use switchyard_core::compress::{Codec, Compression, codec_for};
use switchyard_core::{BatchLimits, Secret};
use switchyard_http::Url;

pub const PATH: &str = "/api/v2/logs";

/// The intake's own limits: 1000 logs and 5 MB uncompressed per request (less the array's
/// two brackets, which the per-log size does not count).
pub const HARD_LIMITS: BatchLimits = BatchLimits {
    max_events: 1000,
    max_bytes: MAX_PAYLOAD_BYTES - 2,
    max_linger: Duration::from_secs(3600),
};

pub const DEFAULT_LIMITS: BatchLimits = BatchLimits {
    max_events: 1000,
    max_bytes: 5_000_000 - 2,
    max_linger: Duration::from_secs(1),
};

/// Datadog's largest log; a larger one is truncated by Datadog, silently.
pub const MAX_LOG_BYTES: usize = 1_000_000;

/// Datadog's largest request, uncompressed; a larger one gets 413.
pub const MAX_PAYLOAD_BYTES: usize = 5_000_000;

/// Datadog accepts logs up to 18 h old but does not index older ones, still answering 202.
/// A minute's margin covers the time in flight. (A limit on future times is not documented.)
pub const MAX_AGE: Duration = Duration::from_secs(18 * 3600 - 60);

/// Datadog sites by the names people use for them (the UI region or the site domain).
const SITES: [(&str, &str); 18] = [
    ("us1", "datadoghq.com"),
    ("datadoghq.com", "datadoghq.com"),
    ("us3", "us3.datadoghq.com"),
    ("us3.datadoghq.com", "us3.datadoghq.com"),
    ("us5", "us5.datadoghq.com"),
    ("us5.datadoghq.com", "us5.datadoghq.com"),
    ("eu", "datadoghq.eu"),
    ("eu1", "datadoghq.eu"),
    ("datadoghq.eu", "datadoghq.eu"),
    ("ap1", "ap1.datadoghq.com"),
    ("ap1.datadoghq.com", "ap1.datadoghq.com"),
    ("ap2", "ap2.datadoghq.com"),
    ("ap2.datadoghq.com", "ap2.datadoghq.com"),
    ("uk1", "uk1.datadoghq.com"),
    ("uk1.datadoghq.com", "uk1.datadoghq.com"),
    ("ddog-gov", "ddog-gov.com"),
    ("ddog-gov.com", "ddog-gov.com"),
    ("us2.ddog-gov.com", "us2.ddog-gov.com"),
];

/// Event fields that can become tags without parsing more of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagField {
    CustomerCode,
    EventType,
}

/// What to do with an event over Datadog's 1 MB per log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Refuse it with a reason: a truncated QoE event is no longer JSON Datadog can parse.
    #[default]
    Reject,
    /// Send it anyway and let Datadog truncate it.
    Truncate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// `datadoghq.com` (default), `us3`, `us5`, `eu`, `ap1`, `ap2`, `uk1`, `ddog-gov`, … or
    /// the site domain.
    #[serde(default)]
    pub site: Option<String>,
    /// An explicit intake base URL (a proxy, a test); overrides `site`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// `ddsource`: what Datadog's pipelines key on.
    #[serde(default = "d_source")]
    pub ddsource: String,
    #[serde(default = "d_service")]
    pub service: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Static `key:value` tags added to every log, e.g. `env:prod`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Event fields turned into tags (`customer_code:…`, `event_type:…`).
    #[serde(default = "d_tag_fields")]
    pub tag_fields: Vec<TagField>,
    /// `zstd` (default), `gzip` or `none`. zstd: Datadog's intake takes it (Datadog's own
    /// agent data plane sends its logs with it) and, at its default level, it sends a fifth
    /// fewer bytes than gzip's best for less CPU (`docs/performance.md`).
    #[serde(default = "d_compression")]
    pub compression: Compression,
    /// The algorithm's level (gzip 1-9, zstd 1-19); unset, the default chosen for cost.
    #[serde(default)]
    pub compression_level: Option<i32>,
    #[serde(default)]
    pub oversize: Oversize,
    /// An event older than Datadog indexes: restamped (default) or refused.
    #[serde(default)]
    pub out_of_window: OutOfWindow,
}

fn d_compression() -> Compression {
    Compression::Zstd
}
fn d_source() -> String {
    "qoe".into()
}
fn d_service() -> String {
    "video-qoe".into()
}
fn d_tag_fields() -> Vec<TagField> {
    vec![TagField::CustomerCode, TagField::EventType]
}

impl DatadogConfig {
    /// `https://http-intake.logs.<site>/api/v2/logs`, or the explicit endpoint's.
    pub fn intake_url(&self) -> Result<Url, String> {
        if let Some(e) = &self.endpoint {
            let base =
                switchyard_http::endpoint_url(e).map_err(|err| format!("endpoint: {err}"))?;
            return base.join(PATH).map_err(|err| format!("endpoint: {err}"));
        }
        let site = self.site.as_deref().unwrap_or("datadoghq.com");
        let domain = SITES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(site))
            .map(|(_, d)| *d)
            .ok_or_else(|| format!("site: unknown Datadog site {site:?} (e.g. datadoghq.com, us3, us5, eu, ap1, ap2, uk1, ddog-gov)"))?;
        Url::parse(&format!("https://http-intake.logs.{domain}{PATH}")).map_err(|e| e.to_string())
    }

    /// `https://api.<site>/api/v1/validate`, which checks the API key; none when an explicit
    /// endpoint (a proxy) is configured.
    pub fn validate_url(&self) -> Option<Url> {
        if self.endpoint.is_some() {
            return None;
        }
        let intake = self.intake_url().ok()?;
        let site = intake.host_str()?.strip_prefix("http-intake.logs.")?;
        Url::parse(&format!("https://api.{site}/api/v1/validate")).ok()
    }

    /// The algorithms the API accepts as `Content-Encoding` (docs/performance.md, "Compression, chosen for cost").
    pub const ACCEPTS: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::None];

    /// How request bodies are compressed, or the key at fault and why.
    pub fn codec(&self) -> Result<Codec, (&'static str, String)> {
        codec_for(
            self.compression,
            self.compression_level,
            "Datadog's logs intake",
            &Self::ACCEPTS,
        )
    }

    /// Every problem with these settings, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = self.codec() {
            out.push(problem);
        }
        if let Err(e) = self.intake_url() {
            let key = if e.starts_with("site") {
                "site"
            } else {
                "endpoint"
            };
            out.push((
                key,
                e.split_once(": ").map_or(e.clone(), |(_, m)| m.to_string()),
            ));
        }
        match &self.api_key {
            None => out.push(("api_key", "is missing".into())),
            Some(k) if k.is_empty() => out.push(("api_key", "is empty".into())),
            Some(_) => {}
        }
        if let Some(bad) = self.tags.iter().find(|t| t.contains(',')) {
            out.push((
                "tags",
                format!("{bad:?} contains a comma (tags are comma-separated)"),
            ));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn config() -> DatadogConfig {
        DatadogConfig {
            site: None,
            endpoint: None,
            api_key: Some(Secret::new("k")),
            ddsource: d_source(),
            service: d_service(),
            hostname: None,
            tags: vec![],
            tag_fields: d_tag_fields(),
            compression: Compression::Gzip,
            compression_level: None,
            oversize: Oversize::Reject,
            out_of_window: OutOfWindow::Restamp,
        }
    }

    #[test]
    fn sites_map_to_their_intake() {
        let mut c = config();
        for (site, host) in [
            (None, "http-intake.logs.datadoghq.com"),
            (Some("us3"), "http-intake.logs.us3.datadoghq.com"),
            (Some("datadoghq.eu"), "http-intake.logs.datadoghq.eu"),
            (Some("EU"), "http-intake.logs.datadoghq.eu"),
            (Some("ap2"), "http-intake.logs.ap2.datadoghq.com"),
            (Some("ddog-gov"), "http-intake.logs.ddog-gov.com"),
            (
                Some("us2.ddog-gov.com"),
                "http-intake.logs.us2.ddog-gov.com",
            ),
        ] {
            c.site = site.map(Into::into);
            let url = c.intake_url().unwrap();
            assert_eq!((url.host_str(), url.path()), (Some(host), "/api/v2/logs"));
        }
    }

    #[test]
    fn key_validation_url_follows_the_site() {
        let mut c = config();
        c.site = Some("eu".into());
        assert_eq!(
            c.validate_url().unwrap().as_str(),
            "https://api.datadoghq.eu/api/v1/validate"
        );
        c.endpoint = Some("http://127.0.0.1:9".into());
        assert!(c.validate_url().is_none());
    }

    #[test]
    fn endpoint_overrides_site_and_problems_are_listed() {
        let mut c = config();
        c.endpoint = Some("http://127.0.0.1:9/".into());
        assert_eq!(
            c.intake_url().unwrap().as_str(),
            "http://127.0.0.1:9/api/v2/logs"
        );
        c.endpoint = None;
        c.site = Some("mars1".into());
        c.api_key = None;
        c.tags = vec!["a:b,c:d".into()];
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["site", "api_key", "tags"]);
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
        assert_eq!(
            c.codec(),
            Ok(Codec::Zstd {
                level: switchyard_core::compress::ZSTD_LEVEL
            })
        );
        c.compression = Compression::None;
        assert_eq!(c.codec(), Ok(Codec::None));
    }
}
