//! `[connectors.<id>]` settings of `kind = "otlp_logs"`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::compress::{Codec, Compression, codec_for};
use switchyard_core::secret::string_or_number;
use switchyard_core::{BatchLimits, Secret};
use switchyard_http::Url;

/// The largest request body, uncompressed, that the reference receiver takes: the
/// OpenTelemetry Collector's `confighttp` server defaults `max_request_body_size` to 20 MiB
/// (`defaultMaxRequestBodySize = 20 * 1024 * 1024` in `config/confighttp`), and the OTLP
/// receiver uses that server. OTLP itself sets no size or count limit; a backend configured
/// lower answers 413, which the engine handles by splitting.
pub const MAX_REQUEST_BYTES: usize = 20 * 1024 * 1024;

/// What the protocol allows. No record count limit exists in OTLP, so only bytes bind;
/// [`crate::OtlpLogs::hard_limits`] further subtracts the per-request resource and scope.
pub const HARD_LIMITS: BatchLimits = BatchLimits {
    max_events: usize::MAX,
    max_bytes: MAX_REQUEST_BYTES,
    max_linger: Duration::from_secs(3600),
};

/// Defaults, each after a documented OpenTelemetry default:
/// - 8192 records: the Collector batch processor's `send_batch_size` default, i.e. what a
///   collector itself would forward in one request.
/// - 4 MiB: the Collector's gRPC receivers default `max_recv_msg_size_mib` to 4, so a
///   request this size can be relayed by a downstream collector hop over OTLP/gRPC as it is.
///   With ~5 KB QoE events this binds before the count (~800 events a request), and keeps
///   each in-flight request's memory small.
/// - 1 s: the SDK `BatchLogRecordProcessor` export delay default (`OTEL_BLRP_SCHEDULE_DELAY`
///   = 1000 ms), the same linger as the other destinations.
pub const DEFAULT_LIMITS: BatchLimits = BatchLimits {
    max_events: 8192,
    max_bytes: 4 * 1024 * 1024,
    max_linger: Duration::from_secs(1),
};

/// Keys whose values are secrets (every value of the `headers` table: vendors put API keys
/// there), for the settings loader's "secret written in the file" check.
pub const SECRET_KEYS: &[&str] = &["headers"];

/// Headers the connector sets itself; configuring them would send a body the server misreads.
const RESERVED_HEADERS: [&str; 4] = ["content-type", "content-encoding", "content-length", "host"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpLogsConfig {
    /// The full logs URL, e.g. `https://otlp.example.com/v1/logs`. Used as it is, like
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`: no `/v1/logs` is appended.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Headers sent with every request, typically a vendor's API key
    /// (`x-api-key`, `authorization`, …). Values are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// The `service.name` resource attribute.
    #[serde(default = "d_service_name")]
    pub service_name: String,
    /// More resource attributes, e.g. `deployment.environment.name = "prod"`.
    #[serde(default, deserialize_with = "string_map")]
    pub resource_attributes: BTreeMap<String, String>,
    /// `gzip` (default), `none`.
    #[serde(default)]
    pub compression: Compression,
    /// The algorithm's level (gzip 1-9, zstd 1-19); unset, the default chosen for cost.
    #[serde(default)]
    pub compression_level: Option<i32>,
}

fn d_service_name() -> String {
    "switchyard".into()
}

/// A table of strings in which a value may arrive as a number (a `SWITCHYARD__…` override
/// such as `service.version = 2` is parsed as one before it gets here).
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Text(String);
    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            string_or_number(d).map(Text)
        }
    }
    let map = BTreeMap::<String, Text>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

impl OtlpLogsConfig {
    /// The endpoint, checked to be an http(s) URL with a host.
    pub fn url(&self) -> Result<Url, String> {
        let e = self.endpoint.as_deref().ok_or("is missing")?;
        switchyard_http::endpoint_url(e)
    }

    /// The algorithms the API accepts as `Content-Encoding` (docs/performance.md, "Compression, chosen for cost").
    pub const ACCEPTS: [Compression; 2] = [Compression::Gzip, Compression::None];

    /// How request bodies are compressed, or the key at fault and why.
    pub fn codec(&self) -> Result<Codec, (&'static str, String)> {
        codec_for(
            self.compression,
            self.compression_level,
            "OTLP/HTTP (the spec names gzip only)",
            &Self::ACCEPTS,
        )
    }

    /// Every problem with these settings, as (key, message). Never includes a header value.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = self.codec() {
            out.push(problem);
        }
        if let Err(e) = self.url() {
            out.push(("endpoint", e));
        }
        for (name, value) in &self.headers {
            if let Some(why) = header_problem(name, value) {
                out.push(("headers", why));
            }
        }
        if self.service_name.trim().is_empty() {
            out.push(("service_name", "is empty".into()));
        }
        if self.resource_attributes.contains_key("service.name") {
            out.push((
                "resource_attributes",
                "sets service.name; use service_name".into(),
            ));
        }
        out
    }
}

/// What is wrong with one configured header, naming it but never showing its value.
fn header_problem(name: &str, value: &Secret) -> Option<String> {
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Some(format!("{name:?} is set by the connector itself"));
    }
    if value.is_empty() {
        return Some(format!("{name:?} has an empty value"));
    }
    switchyard_http::header_problem(name, value.expose())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn config(endpoint: &str) -> OtlpLogsConfig {
        OtlpLogsConfig {
            endpoint: Some(endpoint.into()),
            headers: BTreeMap::from([("x-api-key".into(), Secret::new("k"))]),
            service_name: d_service_name(),
            resource_attributes: BTreeMap::new(),
            compression: Compression::Gzip,
            compression_level: None,
        }
    }

    fn parse(json: serde_json::Value) -> Result<OtlpLogsConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn defaults_and_types() {
        let c = parse(serde_json::json!({
            "endpoint": "https://otlp.example.com/v1/logs",
            "headers": {"x-api-key": "s3cr3t-value"},
            "resource_attributes": {"deployment.environment.name": "prod", "service.version": 2},
            "compression": "none",
        }))
        .unwrap();
        assert_eq!(c.service_name, "switchyard");
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.resource_attributes["service.version"], "2");
        assert_eq!(c.url().unwrap().path(), "/v1/logs", "used as it is");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c = parse(serde_json::json!({"endpoint": "http://127.0.0.1:4318/v1/logs"})).unwrap();
        assert_eq!(c.compression, Compression::Gzip);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(serde_json::json!({"endpoint": "http://h/v1/logs", "api_key": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `api_key`"), "{err}");
    }

    #[test]
    fn problems_are_listed_without_secrets() {
        let mut c = config("ftp://h/v1/logs");
        c.headers = BTreeMap::from([
            ("bad name".into(), Secret::new("s3cr3t-1")),
            ("content-type".into(), Secret::new("s3cr3t-2")),
            ("x-empty".into(), Secret::new(" ")),
            ("x-broken".into(), Secret::new("s3cr3t-3\r\nx-injected: 1")),
        ]);
        c.service_name = String::new();
        c.resource_attributes = BTreeMap::from([("service.name".into(), "x".into())]);
        let problems = c.problems();
        let keys: Vec<_> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "endpoint",
                "headers",
                "headers",
                "headers",
                "headers",
                "service_name",
                "resource_attributes"
            ]
        );
        let text = format!("{problems:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        for bad in ["not a url", "mailto:ops@example.com", ""] {
            assert!(config(bad).url().is_err(), "{bad:?}");
        }
        c.endpoint = None;
        assert_eq!(c.problems()[0], ("endpoint", "is missing".to_string()));
    }

    #[test]
    fn header_values_are_redacted_in_debug() {
        let c = parse(serde_json::json!({
            "endpoint": "http://h/v1/logs",
            "headers": {"authorization": "Bearer s3cr3t-token"},
        }))
        .unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("authorization"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn compression_takes_what_the_api_accepts_at_a_checked_level() {
        let mut c = config("https://h/v1/logs");
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
            why.starts_with("\"zstd\" is not accepted by OTLP/HTTP"),
            "{why}"
        );
        c.compression = Compression::None;
        assert_eq!(c.codec(), Ok(Codec::None));
    }
}
