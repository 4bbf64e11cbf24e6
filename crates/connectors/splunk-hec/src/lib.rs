//! Splunk HTTP Event Collector (HEC) destination.
//!
//! Only what is particular to HEC lives here: its settings ([`config`]), the envelope body
//! ([`encode`]: concatenated `{"time":…,"event":<raw event>}` objects, the event embedded as
//! received) and the meaning of HEC's answers ([`classify`], after Splunk's code table).
//! Batching, retries, concurrency and acknowledgement are the core engine's.

pub mod classify;
pub mod config;
mod destination;
pub mod encode;

use switchyard_core::compress::{BodyWriter, Compression};
use switchyard_core::{BatchLimits, EncodeError, Encoded, Event, Shipment, Verdict};
use switchyard_http::{
    ClientError, ClientOptions, HealthCheck, HttpApi, HttpBody, HttpDestination, HttpResponse,
    HttpTransport,
};

pub use config::HecConfig;
pub use destination::DESCRIPTOR;
use encode::Envelope;

/// A configured HEC endpoint.
pub type SplunkHec = HttpDestination<Hec>;

/// What is particular to HEC: its envelope and its answers.
#[derive(Debug)]
pub struct Hec {
    envelope: Envelope,
    compression: Compression,
    health: HealthCheck,
}

/// HEC settings that cannot make a working connector.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("token is missing")]
    MissingToken,
    #[error("token: {0}")]
    Header(#[from] switchyard_http::HeaderError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl HttpApi for Hec {
    type Config = HecConfig;
    type Error = BuildError;

    fn build(cfg: &HecConfig, client: &ClientOptions) -> Result<(Hec, HttpTransport), BuildError> {
        let url = cfg.event_url().map_err(BuildError::Endpoint)?;
        let health = url
            .join(config::HEALTH_PATH)
            .map_err(|e| BuildError::Endpoint(e.to_string()))?;
        let token = cfg.token.as_ref().ok_or(BuildError::MissingToken)?;
        let transport =
            HttpTransport::new(url, client)?.secret_header("authorization", "Splunk ", token)?;
        let hec = Hec {
            envelope: Envelope::new(cfg),
            compression: cfg.compression,
            health: HealthCheck {
                url: health,
                name: "HEC health",
            },
        };
        Ok((hec, transport))
    }

    fn hard_limits(&self) -> BatchLimits {
        config::HARD_LIMITS
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.envelope.encoded_len(event)
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        let estimate = self.envelope.body_len(shipment);
        let mut body = BodyWriter::new(self.compression, estimate);
        self.envelope.encode(shipment, &mut body);
        Ok(Encoded::all(HttpBody::try_from(body)?))
    }

    fn classify(&self, response: &HttpResponse, events: &[Event]) -> Verdict {
        classify::classify(response, events.len())
    }

    /// `GET /services/collector/health`: 200 while HEC accepts data (it does not check the
    /// token; the first delivery does).
    fn health_check(&self) -> Option<HealthCheck> {
        Some(self.health.clone())
    }
}
