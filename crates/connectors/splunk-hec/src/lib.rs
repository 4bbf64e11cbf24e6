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
use switchyard_core::{
    BatchLimits, Connector, EncodeError, Encoded, Event, SendError, Shipment, Verdict,
};
use switchyard_http::{ClientError, ClientOptions, HttpBody, HttpResponse, HttpTransport, Url};

pub use config::HecConfig;
pub use destination::DESCRIPTOR;
use encode::Envelope;

/// A configured HEC endpoint.
#[derive(Debug)]
pub struct SplunkHec {
    envelope: Envelope,
    compression: Compression,
    transport: HttpTransport,
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

impl SplunkHec {
    pub fn new(cfg: &HecConfig, client: &ClientOptions) -> Result<Self, BuildError> {
        let url = cfg.event_url().map_err(BuildError::Endpoint)?;
        let token = cfg.token.as_ref().ok_or(BuildError::MissingToken)?;
        let transport =
            HttpTransport::new(url, client)?.secret_header("authorization", "Splunk ", token)?;
        Ok(SplunkHec {
            envelope: Envelope::new(cfg),
            compression: cfg.compression,
            transport,
        })
    }

    /// `GET /services/collector/health`: whether HEC is accepting data.
    pub fn health_url(&self) -> Option<Url> {
        self.transport.url().join(config::HEALTH_PATH).ok()
    }
}

impl Connector for SplunkHec {
    type Request = HttpBody;
    type Response = HttpResponse;

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

    fn request_size(&self, request: &HttpBody) -> usize {
        request.bytes.len()
    }

    async fn send(&self, request: &HttpBody) -> Result<HttpResponse, SendError> {
        self.transport.post(request).await
    }

    fn classify(&self, response: &HttpResponse, events: &[Event]) -> Verdict {
        classify::classify(response, events.len())
    }

    /// `GET /services/collector/health`: 200 while HEC accepts data (it does not check the
    /// token; the first delivery does).
    async fn health(&self) -> Result<(), String> {
        let url = self.health_url().ok_or("no health URL")?;
        let r = self.transport.get(url).await.map_err(|e| e.to_string())?;
        match r.status {
            200 => Ok(()),
            s => Err(format!(
                "HEC health answered {s}: {}",
                String::from_utf8_lossy(&r.body)
            )),
        }
    }
}
