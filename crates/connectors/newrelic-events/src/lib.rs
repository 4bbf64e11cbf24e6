//! New Relic Event API (custom events) destination.
//!
//! The Event API takes only flat events of strings and numbers, and answers 200 even when it
//! later drops an event as invalid. So this crate flattens each QoE event ([`flatten`]: the
//! only destination that parses the whole event) and checks New Relic's limits before sending,
//! turning what New Relic would drop silently into counted fixes or rejections with a reason.
//! Settings are in [`config`], answers in [`classify`].

pub mod classify;
pub mod config;
mod destination;
pub mod flatten;

use switchyard_core::compress::{BodyWriter, Codec};
use switchyard_core::{BatchLimits, EncodeError, Encoded, Event, Shipment, Verdict};
use switchyard_http::{
    ClientOptions, HttpApi, HttpBody, HttpDestination, HttpResponse, HttpTransport,
};

pub use config::NewRelicConfig;
pub use destination::DESCRIPTOR;
use flatten::Flattener;

/// The Event API's limit on one POST, compressed: 10^6 bytes.
pub const MAX_PAYLOAD: usize = 1_000_000;

/// A configured New Relic account's Event API.
pub type NewRelicEvents = HttpDestination<NewRelic>;

/// What is particular to New Relic: its flattened events and its answers. It has no health
/// endpoint; the first delivery checks the key.
#[derive(Debug)]
pub struct NewRelic {
    flattener: Flattener,
    codec: Codec,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Config(String),
    #[error("key: {0}")]
    Header(#[from] switchyard_http::HeaderError),
    #[error(transparent)]
    Client(#[from] switchyard_http::ClientError),
}

impl HttpApi for NewRelic {
    type Config = NewRelicConfig;
    type Error = BuildError;

    fn build(
        cfg: &NewRelicConfig,
        client: &ClientOptions,
    ) -> Result<(NewRelic, HttpTransport), BuildError> {
        let url = cfg.events_url().map_err(BuildError::Config)?;
        let transport = HttpTransport::new(url, client)?;
        let transport = match (&cfg.license_key, &cfg.insert_key) {
            (Some(k), None) => transport.secret_header("api-key", "", k)?,
            (None, Some(k)) => transport.secret_header("x-insert-key", "", k)?,
            _ => {
                return Err(BuildError::Config(
                    "set exactly one of license_key and insert_key".into(),
                ));
            }
        };
        let flattener = Flattener::new(cfg).map_err(BuildError::Config)?;
        let codec = cfg
            .codec()
            .map_err(|(key, why)| BuildError::Config(format!("{key}: {why}")))?;
        Ok((NewRelic { flattener, codec }, transport))
    }

    fn hard_limits(&self) -> BatchLimits {
        config::HARD_LIMITS
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.flattener.estimated_len(event)
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        let events = shipment.events();
        let estimate = events.iter().map(|e| self.encoded_len(e)).sum::<usize>() + 2;
        // New Relic documents always compressing; its limit is on the compressed body.
        let mut body = BodyWriter::new(self.codec, estimate);
        let report = self.flattener.encode(shipment, &mut body);
        let (compressed, encoding) = body.finish()?;
        if compressed.len() > MAX_PAYLOAD {
            return Err(EncodeError::TooLarge {
                size: compressed.len(),
                limit: MAX_PAYLOAD,
            });
        }
        Ok(Encoded {
            request: HttpBody {
                bytes: compressed.into(),
                encoding,
            },
            rejected: report.rejected,
            fixes: report.fixes,
        })
    }

    fn classify(&self, response: &HttpResponse, _events: &[Event]) -> Verdict {
        classify::classify(response)
    }
}
