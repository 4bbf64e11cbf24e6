//! Splunk HTTP Event Collector (HEC) destination.
//!
//! Only what is particular to HEC lives here: its settings ([`config`]), the envelope body
//! ([`encode`]: concatenated `{"time":…,"event":<raw event>}` objects, the event embedded as
//! received), the meaning of HEC's answers ([`classify`], after Splunk's code table) and,
//! with `ack = true`, indexer acknowledgement's channel and ack ids ([`ack`]). Batching,
//! retries, concurrency and waiting for acknowledgements are the core engine's.

pub mod ack;
pub mod classify;
pub mod config;
mod destination;
pub mod encode;

use switchyard_core::compress::{BodyWriter, Codec};
use switchyard_core::{
    BatchLimits, ConfirmError, ConfirmSettings, EncodeError, Encoded, Event, Outcome, Receipt,
    Shipment, Verdict,
};
use switchyard_http::{
    ClientError, ClientOptions, HealthProbe, HttpApi, HttpBody, HttpDestination, HttpResponse,
    HttpTransport, Url,
};

pub use config::HecConfig;
pub use destination::DESCRIPTOR;
use encode::HecEnvelope;

/// A configured HEC endpoint.
pub type SplunkHec = HttpDestination<Hec>;

/// What is particular to HEC: its envelope and its answers.
#[derive(Debug)]
pub struct Hec {
    envelope: HecEnvelope,
    codec: Codec,
    health: HealthProbe,
    /// Indexer acknowledgement, when `ack = true`.
    ack: Option<Acks>,
}

/// With `ack = true`: the instance's channel, where to poll, and how.
#[derive(Debug)]
struct Acks {
    channel: ack::Channel,
    url: Url,
    settings: ConfirmSettings,
}

/// The header naming the channel on every request when ack is on.
pub const CHANNEL_HEADER: &str = "x-splunk-request-channel";

/// The channel a request named ("" if none: no channel's, so never the current one).
fn sent_channel<'a>(sent: &'a [(&'static str, String)]) -> &'a str {
    sent.iter()
        .find(|(name, _)| *name == CHANNEL_HEADER)
        .map_or("", |(_, uuid)| uuid.as_str())
}

/// HEC settings that cannot make a working connector.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Compression(String),
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
        let ack = match cfg.confirmation() {
            Some(settings) => Some(Acks {
                channel: ack::Channel::default(),
                url: cfg.ack_url().map_err(BuildError::Endpoint)?,
                settings,
            }),
            None => None,
        };
        let hec = Hec {
            envelope: HecEnvelope::new(cfg),
            codec: cfg
                .codec()
                .map_err(|(key, why)| BuildError::Compression(format!("{key}: {why}")))?,
            health: HealthProbe {
                url: health,
                name: "HEC health",
            },
            ack,
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
        let mut body = BodyWriter::new(self.codec, estimate);
        self.envelope.encode(shipment, &mut body);
        Ok(Encoded::all(HttpBody::try_from(body)?))
    }

    fn classify(&self, response: &HttpResponse, events: &[Event]) -> Verdict {
        self.classify_sent(response, &[], events)
    }

    /// With ack on, an answer belongs to the channel its request named: its ack id is that
    /// channel's, and a code 11 replaces that channel only if it is still the current one.
    fn classify_sent(
        &self,
        response: &HttpResponse,
        sent: &[(&'static str, String)],
        events: &[Event],
    ) -> Verdict {
        let Some(acks) = &self.ack else {
            return classify::classify(response, events.len(), classify::Ack::Off);
        };
        let channel = sent_channel(sent);
        let generation = acks.channel.generation_of(channel);
        let verdict = classify::classify(response, events.len(), classify::Ack::On { generation });
        if matches!(verdict.outcome, Outcome::Retry { .. })
            && classify::code(&response.body) == Some(classify::CHANNEL_INVALID)
        {
            acks.channel.renew(channel);
        }
        verdict
    }

    /// `GET /services/collector/health`: 200 while HEC accepts data (it does not check the
    /// token; the first delivery does).
    fn health_probe(&self) -> Option<HealthProbe> {
        Some(self.health.clone())
    }

    /// With ack on, every request names the instance's channel.
    fn request_headers(&self) -> Vec<(&'static str, String)> {
        match &self.ack {
            Some(acks) => vec![(CHANNEL_HEADER, acks.channel.current().1)],
            None => Vec::new(),
        }
    }

    fn confirmation(&self) -> Option<ConfirmSettings> {
        self.ack.as_ref().map(|a| a.settings)
    }

    /// `POST /services/collector/ack?channel=<uuid>` with `{"acks":[ids]}`, for the receipts
    /// of the current channel; those of an older channel cannot be asked about any more.
    fn confirm_request(
        &self,
        receipts: &[Receipt],
    ) -> Result<Option<(Url, HttpBody)>, ConfirmError> {
        let Some(acks) = &self.ack else {
            return Err(ConfirmError::Unsupported);
        };
        let (generation, channel) = acks.channel.current();
        let ids: Vec<u64> = receipts
            .iter()
            .map(|r| ack::parts(*r))
            .filter(|(g, _)| *g == generation)
            .map(|(_, id)| id)
            .collect();
        if ids.is_empty() {
            return Ok(None);
        }
        let mut url = acks.url.clone();
        url.query_pairs_mut().append_pair("channel", &channel);
        let body = serde_json::json!({ "acks": ids }).to_string();
        Ok(Some((
            url,
            HttpBody {
                bytes: body.into(),
                encoding: None,
            },
        )))
    }

    fn confirmed(
        &self,
        response: &HttpResponse,
        sent: &[(&'static str, String)],
        asked: &[Receipt],
    ) -> Result<Vec<Receipt>, ConfirmError> {
        let Some(acks) = &self.ack else {
            return Err(ConfirmError::Unsupported);
        };
        let channel = sent_channel(sent);
        let generation = acks.channel.generation_of(channel);
        let ids = classify::acknowledged(response).inspect_err(|_| {
            // Splunk forgot the channel (a restart, or it idled out): its ids are lost, so
            // they time out and are sent again; new requests go on a new channel.
            if classify::code(&response.body) == Some(classify::CHANNEL_INVALID) {
                acks.channel.renew(channel);
            }
        })?;
        Ok(classify::confirmed(asked, generation, &ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hec() -> Hec {
        let cfg: HecConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "http://127.0.0.1:1", "token": "t", "ack": true
        }))
        .unwrap();
        Hec::build(&cfg, &ClientOptions::default()).unwrap().0
    }

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: None,
            body: body.to_owned().into(),
        }
    }

    #[test]
    fn an_answer_belongs_to_the_channel_its_request_named() {
        let hec = hec();
        let sent = hec.request_headers();
        assert_eq!(sent[0].0, CHANNEL_HEADER);
        let events = [switchyard_testkit::event(r#"{"event":{"timestamp":1}}"#)];
        let ok = answer(200, r#"{"text":"Success","code":0,"ackId":3}"#);
        assert_eq!(
            hec.classify_sent(&ok, &sent, &events).outcome,
            Outcome::Accepted(ack::receipt(0, 3))
        );
        // Splunk says the channel is invalid: a new one replaces it, once.
        let invalid = answer(400, r#"{"text":"Invalid data channel","code":11}"#);
        assert!(matches!(
            hec.classify_sent(&invalid, &sent, &events).outcome,
            Outcome::Retry { .. }
        ));
        let renewed = hec.request_headers();
        assert_ne!(renewed, sent);
        hec.classify_sent(&invalid, &sent, &events);
        assert_eq!(hec.request_headers(), renewed, "the old channel's 11 again");
        // A late success on the old channel: its id is not the new channel's.
        assert_eq!(
            hec.classify_sent(&ok, &sent, &events).outcome,
            Outcome::Accepted(ack::receipt(ack::REPLACED, 3))
        );
        // Receipts of a replaced channel are not asked about.
        assert!(
            hec.confirm_request(&[ack::receipt(0, 3)])
                .unwrap()
                .is_none()
        );
        let (url, body) = hec
            .confirm_request(&[ack::receipt(1, 0), ack::receipt(1, 4)])
            .unwrap()
            .unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "http://127.0.0.1:1/services/collector/ack?channel={}",
                renewed[0].1
            )
        );
        assert_eq!(&body.bytes[..], br#"{"acks":[0,4]}"#);
    }
}
