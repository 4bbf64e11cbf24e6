//! How the binary knows New Relic Events: its kind name, limits and credentials, and how it
//! is built.

use crate::config::{self, NewRelicConfig};
use crate::{BuildError, NewRelicEvents};
use switchyard_destination::{Descriptor, Destination, Framing, Wire, descriptor};
use switchyard_http::ClientOptions;

pub const DESCRIPTOR: Descriptor = descriptor::<NewRelicConfig>();

/// The account a stand-in serves (New Relic's ids are numbers).
const STAND_IN_ACCOUNT: &str = "1000001";

impl Destination for NewRelicConfig {
    const KIND: &'static str = "newrelic_events";
    const SECRET_KEYS: &'static [&'static str] = &["license_key", "insert_key"];
    const DEFAULT_LIMITS: switchyard_core::BatchLimits = config::DEFAULT_LIMITS;
    const HARD_LIMITS: switchyard_core::BatchLimits = config::HARD_LIMITS;
    type Connector = NewRelicEvents;
    type Error = BuildError;

    fn problems(&self) -> Vec<(&'static str, String)> {
        NewRelicConfig::problems(self)
    }

    async fn connect(&self, client: &ClientOptions) -> Result<NewRelicEvents, BuildError> {
        NewRelicEvents::new(self, client)
    }

    /// The key the file uses (license or insert) carries the credential.
    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        let key = if self.insert_key.is_some() {
            "insert_key"
        } else {
            "license_key"
        };
        vec![
            ("endpoint", url.into()),
            ("account_id", STAND_IN_ACCOUNT.into()),
            (key, credential.into()),
        ]
    }

    fn wire(&self) -> Wire {
        Wire {
            authorized: |header, credential| {
                ["api-key", "x-insert-key"]
                    .iter()
                    .any(|h| header(h).as_deref() == Some(credential))
            },
            health_request: None,
            framing: Framing::Embedded,
            accepted: (200, |_| {
                r#"{"success":true,"uuid":"bd3b1e1c-0000-4000-8000-000000000000"}"#.into()
            }),
            healthy: "{}".into(),
            content_type: "application/json",
        }
    }

    #[cfg(feature = "stand-in")]
    async fn start_stand_in(
        &self,
        credential: &str,
    ) -> Result<switchyard_destination::StandIn, String> {
        let fake =
            switchyard_testkit::FakeNewRelic::start_with(STAND_IN_ACCOUNT, credential, false)
                .await
                .map_err(|e| e.to_string())?;
        Ok(switchyard_testkit::fake::stand_in_parts(fake).into())
    }
}
