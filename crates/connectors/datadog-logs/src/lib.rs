//! Datadog Logs intake API v2 destination.
//!
//! What is particular to Datadog lives here: its settings and sites ([`config`]), the log body
//! ([`encode`]: a JSON array of logs, each the QoE event's own fields plus `ddsource`,
//! `service`, `ddtags`, `message` and `timestamp`, spliced in without re-serializing the event)
//! and the meaning of its answers ([`classify`]). The core engine does the rest.

pub mod classify;
pub mod config;
mod destination;
pub mod encode;

use switchyard_core::compress::{BodyWriter, Codec};
use switchyard_core::{BatchLimits, EncodeError, Encoded, Event, Shipment, Verdict};
use switchyard_http::{
    ClientOptions, HealthProbe, HttpApi, HttpBody, HttpDestination, HttpResponse, HttpTransport,
};

pub use config::DatadogConfig;
pub use destination::DESCRIPTOR;
use encode::LogEncoder;

/// A configured Datadog logs intake.
pub type DatadogLogs = HttpDestination<Datadog>;

/// What is particular to Datadog: its log body and its answers.
#[derive(Debug)]
pub struct Datadog {
    encoder: LogEncoder,
    codec: Codec,
    /// `GET /api/v1/validate` on the site's API host; None behind a proxy endpoint, which
    /// has nothing standard to ask.
    validate: Option<HealthProbe>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Compression(String),
    #[error("{0}")]
    Url(String),
    #[error("api_key is missing")]
    MissingKey,
    #[error("api_key: {0}")]
    Header(#[from] switchyard_http::HeaderError),
    #[error(transparent)]
    Client(#[from] switchyard_http::ClientError),
}

impl HttpApi for Datadog {
    type Config = DatadogConfig;
    type Error = BuildError;

    fn build(
        cfg: &DatadogConfig,
        client: &ClientOptions,
    ) -> Result<(Datadog, HttpTransport), BuildError> {
        let url = cfg.intake_url().map_err(BuildError::Url)?;
        let key = cfg.api_key.as_ref().ok_or(BuildError::MissingKey)?;
        let transport = HttpTransport::new(url, client)?.secret_header("dd-api-key", "", key)?;
        let datadog = Datadog {
            encoder: LogEncoder::new(cfg),
            codec: cfg
                .codec()
                .map_err(|(key, why)| BuildError::Compression(format!("{key}: {why}")))?,
            validate: cfg.validate_url().map(|url| HealthProbe {
                url,
                name: "Datadog key validation",
            }),
        };
        Ok((datadog, transport))
    }

    fn hard_limits(&self) -> BatchLimits {
        config::HARD_LIMITS
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.encoder.log_len(event) + 1
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        let estimate = self.encoder.body_len(shipment);
        let mut body = BodyWriter::new(self.codec, estimate);
        let encoded = self.encoder.encode(shipment, &mut body);
        // The batcher's sizes are estimates (a tag value may need escapes): this is exact.
        let size = body.uncompressed_len();
        if size > config::MAX_PAYLOAD_BYTES {
            return Err(EncodeError::TooLarge {
                size,
                limit: config::MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Encoded {
            request: HttpBody::try_from(body)?,
            rejected: encoded.rejected,
            fixes: encoded.fixes,
        })
    }

    fn classify(&self, response: &HttpResponse, _events: &[Event]) -> Verdict {
        classify::classify(response)
    }

    /// 200 when the API key is valid.
    fn health_probe(&self) -> Option<HealthProbe> {
        self.validate.clone()
    }
}
