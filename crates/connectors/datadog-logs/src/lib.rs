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

use switchyard_core::compress::BodyWriter;
use switchyard_core::{
    BatchLimits, Connector, EncodeError, Encoded, Event, SendError, Shipment, Verdict,
};
use switchyard_http::{HttpBody, HttpResponse, HttpTransport};

pub use config::DatadogConfig;
pub use destination::DESCRIPTOR;
use encode::LogEncoder;

#[derive(Debug)]
pub struct DatadogLogs {
    encoder: LogEncoder,
    compression: switchyard_core::compress::Compression,
    transport: HttpTransport,
    validate_url: Option<switchyard_http::Url>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Url(String),
    #[error("api_key is missing")]
    MissingKey,
    #[error("api_key: {0}")]
    Header(#[from] switchyard_http::HeaderError),
    #[error(transparent)]
    Client(#[from] switchyard_http::ClientError),
}

impl DatadogLogs {
    pub fn new(
        cfg: &DatadogConfig,
        client: &switchyard_http::ClientOptions,
    ) -> Result<Self, BuildError> {
        let url = cfg.intake_url().map_err(BuildError::Url)?;
        let key = cfg.api_key.as_ref().ok_or(BuildError::MissingKey)?;
        let transport = HttpTransport::new(url, client)?.secret_header("dd-api-key", "", key)?;
        Ok(DatadogLogs {
            encoder: LogEncoder::new(cfg),
            compression: cfg.compression,
            transport,
            validate_url: cfg.validate_url(),
        })
    }
}

impl Connector for DatadogLogs {
    type Request = HttpBody;
    type Response = HttpResponse;

    fn hard_limits(&self) -> BatchLimits {
        config::HARD_LIMITS
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.encoder.log_len(event) + 1
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        let estimate = self.encoder.body_len(shipment);
        let mut body = BodyWriter::new(self.compression, estimate);
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

    fn request_size(&self, request: &HttpBody) -> usize {
        request.bytes.len()
    }

    async fn send(&self, request: &HttpBody) -> Result<HttpResponse, SendError> {
        self.transport.post(request).await
    }

    fn classify(&self, response: &HttpResponse, _events: &[Event]) -> Verdict {
        classify::classify(response)
    }

    /// `GET /api/v1/validate` on the site's API host: 200 when the API key is valid.
    async fn health(&self) -> Result<(), String> {
        let Some(url) = self.validate_url.clone() else {
            return Ok(()); // a proxy endpoint: nothing standard to ask
        };
        let r = self.transport.get(url).await.map_err(|e| e.to_string())?;
        match r.status {
            200 => Ok(()),
            s => Err(format!("Datadog key validation answered {s}")),
        }
    }
}
