//! How the binary knows HEC: its kind name, limits and credentials, and how it is built.

use crate::config::{self, HecConfig};
use crate::{BuildError, SplunkHec};
use switchyard_destination::{Descriptor, Destination, Framing, Wire, descriptor};
use switchyard_http::ClientOptions;

pub const DESCRIPTOR: Descriptor = descriptor::<HecConfig>();

impl Destination for HecConfig {
    const KIND: &'static str = "splunk_hec";
    const SECRET_KEYS: &'static [&'static str] = &["token"];
    const DEFAULT_LIMITS: switchyard_core::BatchLimits = config::DEFAULT_LIMITS;
    const HARD_LIMITS: switchyard_core::BatchLimits = config::HARD_LIMITS;
    type Connector = SplunkHec;
    type Error = BuildError;

    fn problems(&self) -> Vec<(&'static str, String)> {
        HecConfig::problems(self)
    }

    async fn connect(&self, client: &ClientOptions) -> Result<SplunkHec, BuildError> {
        SplunkHec::new(self, client)
    }

    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        vec![("endpoint", url.into()), ("token", credential.into())]
    }

    fn notes(&self) -> Vec<String> {
        if !self.ack {
            return Vec::new();
        }
        vec![format!(
            "indexer acknowledgement: polled every {} s, up to {} ack ids pending, resent after {} s unacknowledged",
            self.ack_poll_interval_secs, self.ack_max_pending, self.ack_timeout_secs
        )]
    }

    fn wire(&self) -> Wire {
        Wire {
            authorized: |header, credential| {
                header("authorization").as_deref() == Some(&format!("Splunk {credential}"))
            },
            health_request: None,
            framing: Framing::Embedded,
            accepted: (200, |_| r#"{"text":"Success","code":0}"#.into()),
            healthy: r#"{"text":"HEC is healthy","code":17}"#.into(),
            content_type: "application/json",
        }
    }

    #[cfg(feature = "stand-in")]
    async fn start_stand_in(
        &self,
        credential: &str,
    ) -> Result<switchyard_destination::StandIn, String> {
        let fake = switchyard_testkit::FakeHec::builder(credential)
            .counting_only()
            .start()
            .await
            .map_err(|e| e.to_string())?;
        Ok(switchyard_testkit::fake::stand_in_parts(fake).into())
    }
}
