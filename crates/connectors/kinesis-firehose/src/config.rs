//! `[connectors.<id>]` settings of `kind = "kinesis_firehose"`.

use serde::Deserialize;
use std::time::Duration;
use switchyard_core::{BatchLimits, Secret};

/// PutRecordBatch's own limits: 500 records and 4 MB per call (the API reference says 4 MB,
/// quota pages 4 MiB: the smaller is used).
pub const HARD_LIMITS: BatchLimits = BatchLimits {
    max_events: 500,
    max_bytes: 4_000_000,
    max_linger: Duration::from_secs(3600),
};

pub const DEFAULT_LIMITS: BatchLimits = BatchLimits {
    max_events: 500,
    max_bytes: 4_000_000,
    max_linger: Duration::from_secs(1),
};

/// The largest record Firehose takes: 1,000 KiB before base64.
pub const MAX_RECORD_BYTES: usize = 1_024_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseConfig {
    #[serde(default)]
    pub delivery_stream: String,
    /// Region; when unset, the standard chain (`AWS_REGION`, profile) decides.
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint (a VPC endpoint, a test emulator). The key is `endpoint`, as for the
    /// other connectors; the loader still takes the old `endpoint_url`, with a warning.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A role to assume on top of the standard credentials (env, profile, web identity / IRSA,
    /// instance metadata).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Static keys, as Datazoom's Kinesis connector takes them. Leave unset to use the
    /// standard chain (preferred in Kubernetes: IRSA).
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Appended to every record: Firehose adds no delimiter, and `\n` keeps the S3 objects
    /// line-delimited JSON.
    #[serde(default = "d_delimiter")]
    pub record_delimiter: String,
    /// Several events per record, up to the record limit (see README: cuts cost, since
    /// Firehose bills per record rounded up to 5 KB).
    #[serde(default)]
    pub record_packing: bool,
}

fn d_delimiter() -> String {
    "\n".into()
}

impl FirehoseConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name_ok = (1..=64).contains(&self.delivery_stream.len())
            && self
                .delivery_stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !name_ok {
            out.push((
                "delivery_stream",
                format!(
                    "{:?} is not a stream name (1-64 of a-z A-Z 0-9 _ . -)",
                    self.delivery_stream
                ),
            ));
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            out.push((
                "region",
                format!("{r:?} is not a region name like us-east-1"),
            ));
        }
        if let Some(Err(e)) = self.endpoint.as_deref().map(switchyard_http::endpoint_url) {
            out.push(("endpoint", e));
        }
        if let Some(arn) = &self.role_arn
            && !(arn.starts_with("arn:aws") && arn.contains(":role/"))
        {
            out.push((
                "role_arn",
                format!("{arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            out.push((
                "secret_access_key",
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        if self.record_delimiter.len() > 16 {
            out.push(("record_delimiter", "is longer than 16 bytes".into()));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn config() -> FirehoseConfig {
        FirehoseConfig {
            delivery_stream: "qoe-stream".into(),
            region: Some("us-east-1".into()),
            endpoint: None,
            role_arn: None,
            access_key_id: None,
            secret_access_key: None,
            record_delimiter: d_delimiter(),
            record_packing: false,
        }
    }

    #[test]
    fn problems_are_listed() {
        assert!(config().problems().is_empty());
        let mut c = config();
        c.delivery_stream = "has space".into();
        c.region = Some("US East".into());
        c.endpoint = Some("localhost:4566".into());
        c.role_arn = Some("my-role".into());
        c.access_key_id = Some(Secret::new("AKIA"));
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "delivery_stream",
                "region",
                "endpoint",
                "role_arn",
                "secret_access_key"
            ]
        );
    }
}
