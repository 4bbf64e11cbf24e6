//! How the binary knows Datadog Logs: its kind name, limits and credentials, and how it is
//! built.

use crate::config::{self, DatadogConfig};
use crate::{BuildError, DatadogLogs};
use switchyard_destination::{Descriptor, Destination, Framing, Wire, descriptor};
use switchyard_http::ClientOptions;

pub const DESCRIPTOR: Descriptor = descriptor::<DatadogConfig>();

impl Destination for DatadogConfig {
    const KIND: &'static str = "datadog_logs";
    const SECRET_KEYS: &'static [&'static str] = &["api_key"];
    const DEFAULT_LIMITS: switchyard_core::BatchLimits = config::DEFAULT_LIMITS;
    const HARD_LIMITS: switchyard_core::BatchLimits = config::HARD_LIMITS;
    type Connector = DatadogLogs;
    type Error = BuildError;

    fn problems(&self) -> Vec<(&'static str, String)> {
        DatadogConfig::problems(self)
    }

    async fn connect(&self, client: &ClientOptions) -> Result<DatadogLogs, BuildError> {
        DatadogLogs::new(self, client)
    }

    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        vec![("endpoint", url.into()), ("api_key", credential.into())]
    }

    fn wire(&self) -> Wire {
        Wire {
            authorized: |header, credential| header("dd-api-key").as_deref() == Some(credential),
            health_request: None,
            framing: Framing::Embedded,
            accepted: (202, |_| "{}".into()),
            healthy: r#"{"valid":true}"#.into(),
            content_type: "application/json",
        }
    }

    #[cfg(feature = "stand-in")]
    async fn start_stand_in(
        &self,
        credential: &str,
    ) -> Result<switchyard_destination::StandIn, String> {
        let fake = switchyard_testkit::FakeDatadog::start_with(
            credential,
            switchyard_testkit::datadog::MAX_PAYLOAD,
            false,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(switchyard_testkit::fake::stand_in_parts(fake).into())
    }
}
