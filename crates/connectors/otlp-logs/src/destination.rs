//! How the binary knows OTLP logs: its kind name, limits and credentials, and how it is
//! built.

use crate::config::{self, OtlpLogsConfig};
use crate::{BuildError, OtlpLogs};
use switchyard_destination::{Descriptor, Destination, Framing, Wire, descriptor};
use switchyard_http::ClientOptions;

pub const DESCRIPTOR: Descriptor = descriptor::<OtlpLogsConfig>();

/// The header a stand-in checks; vendors name their own (Honeycomb's `x-honeycomb-team`,
/// Grafana's `authorization`), any of which `headers` can carry.
const STAND_IN_HEADER: &str = "headers.x-api-key";

impl Destination for OtlpLogsConfig {
    const KIND: &'static str = "otlp_logs";
    /// Every value of the `headers` table: vendors put their API keys there.
    const SECRET_KEYS: &'static [&'static str] = &["headers"];
    const DEFAULT_LIMITS: switchyard_core::BatchLimits = config::DEFAULT_LIMITS;
    const HARD_LIMITS: switchyard_core::BatchLimits = config::HARD_LIMITS;
    type Connector = OtlpLogs;
    type Error = BuildError;

    fn problems(&self) -> Vec<(&'static str, String)> {
        OtlpLogsConfig::problems(self)
    }

    async fn connect(&self, client: &ClientOptions) -> Result<OtlpLogs, BuildError> {
        OtlpLogs::new(self, client)
    }

    /// `url` is the stand-in's base: OTLP's endpoint is the full logs URL.
    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", format!("{url}/v1/logs")),
            (STAND_IN_HEADER, credential.into()),
        ]
    }

    /// An empty `ExportLogsServiceResponse` (no partial success) accepts every record.
    fn wire(&self) -> Wire {
        Wire {
            authorized: |header, credential| header("x-api-key").as_deref() == Some(credential),
            health_request: None,
            framing: Framing::Embedded,
            accepted: (200, |_| String::new()),
            healthy: String::new(),
            content_type: "application/x-protobuf",
        }
    }

    #[cfg(feature = "stand-in")]
    async fn start_stand_in(
        &self,
        credential: &str,
    ) -> Result<switchyard_destination::StandIn, String> {
        let fake = switchyard_testkit::FakeOtlp::start_with(
            credential,
            switchyard_testkit::otlp::MAX_BODY,
            false,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(switchyard_testkit::fake::stand_in_parts(fake).into())
    }
}
