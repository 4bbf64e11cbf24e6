//! OpenTelemetry OTLP/HTTP logs destination (binary protobuf encoding).
//!
//! What is particular to OTLP lives here: its settings ([`config`]), the request body
//! ([`encode`]: one `LogRecord` per QoE event, the event's JSON as the body, its routing fields
//! as attributes) and the meaning of the receiver's answers ([`classify`]). The messages are
//! the generated types of the `opentelemetry-proto` crate, the same ones the testkit's
//! `FakeOtlp` decodes with. The core engine does the rest; OTLP has no health endpoint, so the
//! default `health()` is kept.
//!
//! Protocol facts relied on, from the OTLP specification (`docs/specification.md` of
//! open-telemetry/opentelemetry-proto, as bundled in `opentelemetry-proto` 0.33.1, section
//! "OTLP/HTTP"), and the exporter specification (`specification/protocol/exporter.md` of
//! open-telemetry/opentelemetry-specification, "Endpoint URLs for OTLP/HTTP"):
//!
//! - Requests are `POST`s of a protobuf `ExportLogsServiceRequest`; binary protobuf bodies
//!   MUST be sent with `Content-Type: application/x-protobuf`.
//! - The client MAY gzip the body and then MUST send `Content-Encoding: gzip`.
//! - The default logs path is `/v1/logs`, but a per-signal endpoint
//!   (`OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`) MUST be used as-is: so is `endpoint` here, and
//!   nothing is appended to it.
//! - Success is `200 OK` with an `ExportLogsServiceResponse`. If its `partial_success` has
//!   `rejected_log_records > 0`, that many records were rejected (with an `error_message`)
//!   and the client MUST NOT retry the request.
//! - Failures are 4xx/5xx with a protobuf `google.rpc.Status` body. Only 429, 502, 503 and
//!   504 SHOULD be retried; all other 4xx and 5xx MUST NOT be. 429 and 503 MAY carry
//!   `Retry-After`, which the client SHOULD honour. `400 Bad Request` MUST NOT be retried.
//! - Default OTLP/HTTP port: 4318.
//!
//! Size limits are not part of OTLP: see [`config::HARD_LIMITS`] and
//! [`config::DEFAULT_LIMITS`] for the values chosen and why.

pub mod classify;
pub mod config;
mod destination;
pub mod encode;

use switchyard_core::compress::{BodyWriter, Codec};
use switchyard_core::{BatchLimits, EncodeError, Encoded, Event, Shipment, Verdict};
use switchyard_http::{
    ClientOptions, HttpApi, HttpBody, HttpDestination, HttpResponse, HttpTransport,
};

pub use config::OtlpLogsConfig;
pub use destination::DESCRIPTOR;
use encode::LogEncoder;

/// The OTLP binary protobuf media type, for requests and answers alike.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// A configured OTLP/HTTP logs receiver.
pub type OtlpLogs = HttpDestination<Otlp>;

/// What is particular to OTLP: its protobuf request and its answers. It has no health
/// endpoint.
#[derive(Debug)]
pub struct Otlp {
    encoder: LogEncoder,
    codec: Codec,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Compression(String),
    #[error("endpoint {0}")]
    Url(String),
    /// A configured header; its value never appears here.
    #[error("headers: {0}")]
    Header(#[from] switchyard_http::HeaderError),
    #[error(transparent)]
    Client(#[from] switchyard_http::ClientError),
}

impl HttpApi for Otlp {
    type Config = OtlpLogsConfig;
    type Error = BuildError;

    fn build(
        cfg: &OtlpLogsConfig,
        client: &ClientOptions,
    ) -> Result<(Otlp, HttpTransport), BuildError> {
        let url = cfg.url().map_err(BuildError::Url)?;
        let mut transport = HttpTransport::new(url, client)?.content_type(CONTENT_TYPE);
        for (name, value) in &cfg.headers {
            transport = transport.configured_secret_header(name, value)?;
        }
        let otlp = Otlp {
            encoder: LogEncoder::new(cfg),
            codec: cfg
                .codec()
                .map_err(|(key, why)| BuildError::Compression(format!("{key}: {why}")))?,
        };
        Ok((otlp, transport))
    }

    /// The protocol's limits less the resource and scope every request carries, which the
    /// per-event sizes do not count.
    fn hard_limits(&self) -> BatchLimits {
        BatchLimits {
            max_bytes: config::MAX_REQUEST_BYTES - self.encoder.envelope_len(),
            ..config::HARD_LIMITS
        }
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.encoder.record_len(event)
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        let (records, report) = self.encoder.records(shipment);
        // The batcher's sizes leave out the spliced observability records: this is exact,
        // and checked before anything is compressed.
        let size = self.encoder.request_len(&records);
        if size > config::MAX_REQUEST_BYTES {
            return Err(EncodeError::TooLarge {
                size,
                limit: config::MAX_REQUEST_BYTES,
            });
        }
        let mut body = BodyWriter::new(self.codec, size);
        self.encoder.encode(records, &mut body);
        Ok(Encoded {
            request: HttpBody::try_from(body)?,
            rejected: Vec::new(),
            fixes: report.fixes,
        })
    }

    fn classify(&self, response: &HttpResponse, _events: &[Event]) -> Verdict {
        classify::classify(response)
    }
}
