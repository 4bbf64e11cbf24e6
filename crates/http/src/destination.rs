//! The glue every HTTP destination shares: the request's size on the wire, sending it, and
//! the health check's GET. A destination implements [`HttpApi`] (its encoder, its answers,
//! where its health endpoint is) and runs as an [`HttpDestination`], so its crate holds only
//! what is particular to its API.

use crate::{ClientOptions, HttpBody, HttpResponse, HttpTransport, Url};
use switchyard_core::{
    BatchLimits, ConfirmError, ConfirmSettings, Connector, EncodeError, Encoded, Event, Receipt,
    SendError, Shipment, Verdict,
};

/// What is particular to one HTTP API.
pub trait HttpApi: Send + Sync + Sized + 'static {
    /// The destination's settings.
    type Config;
    type Error: std::error::Error + Send + Sync + 'static;

    /// The API and the transport (its endpoint and auth headers) that `config` describes.
    fn build(
        config: &Self::Config,
        client: &ClientOptions,
    ) -> Result<(Self, HttpTransport), Self::Error>;

    /// The API's own limits; configured batch limits are clamped to these.
    fn hard_limits(&self) -> BatchLimits;

    /// Bytes `event` adds to an uncompressed request body.
    fn encoded_len(&self, event: &Event) -> usize;

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError>;

    /// What `response` means for the `events` that were sent, in order.
    fn classify(&self, response: &HttpResponse, events: &[Event]) -> Verdict;

    /// [`HttpApi::classify`] for an API whose answer depends on the per-request headers the
    /// request carried (`sent`, from [`HttpApi::request_headers`] at send time): HEC's ack id
    /// belongs to the channel the request named, which may since have been replaced.
    fn classify_sent(
        &self,
        response: &HttpResponse,
        sent: &[(&'static str, String)],
        events: &[Event],
    ) -> Verdict {
        let _ = sent;
        self.classify(response, events)
    }

    /// The GET that tells whether the destination is up and takes these credentials, sent
    /// with the transport's headers; 200 means healthy. None: the API has no such endpoint.
    fn health_probe(&self) -> Option<HealthProbe> {
        None
    }

    /// Headers whose values vary by request, added to every POST (HEC's channel).
    fn request_headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Whether accepted requests are confirmed later, and how often to ask; see
    /// [`Connector::confirmation`]. With Some, [`HttpApi::confirm_request`] and
    /// [`HttpApi::confirmed`] say how.
    fn confirmation(&self) -> Option<ConfirmSettings> {
        None
    }

    /// The POST (URL and body) that asks which of `receipts` are confirmed; None when none
    /// of them can be asked about any more (they are left to time out).
    fn confirm_request(
        &self,
        receipts: &[Receipt],
    ) -> Result<Option<(Url, HttpBody)>, ConfirmError> {
        let _ = receipts;
        Err(ConfirmError::Unsupported)
    }

    /// The receipts `response` confirms, of those `asked`; `sent` are the per-request
    /// headers the poll carried.
    fn confirmed(
        &self,
        response: &HttpResponse,
        sent: &[(&'static str, String)],
        asked: &[Receipt],
    ) -> Result<Vec<Receipt>, ConfirmError> {
        let _ = (response, sent, asked);
        Err(ConfirmError::Unsupported)
    }
}

/// An HTTP answer, with the per-request headers its request carried.
#[derive(Debug, Clone)]
pub struct Answered {
    pub response: HttpResponse,
    /// From [`HttpApi::request_headers`], as sent.
    pub sent: Vec<(&'static str, String)>,
}

/// An answer to a request that carried no per-request headers.
impl From<HttpResponse> for Answered {
    fn from(response: HttpResponse) -> Self {
        Answered {
            response,
            sent: Vec::new(),
        }
    }
}

/// A destination's health endpoint.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    pub url: Url,
    /// What the answer is, for the message when it is not 200 (`HEC health`).
    pub name: &'static str,
}

/// An HTTP destination: its API and the transport to it.
#[derive(Debug)]
pub struct HttpDestination<A> {
    api: A,
    transport: HttpTransport,
}

/// How much of a health endpoint's answer a failure message quotes.
const QUOTED_BODY: usize = 200;

impl<A: HttpApi> HttpDestination<A> {
    pub fn new(config: &A::Config, client: &ClientOptions) -> Result<Self, A::Error> {
        let (api, transport) = A::build(config, client)?;
        Ok(HttpDestination { api, transport })
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn url(&self) -> &Url {
        self.transport.url()
    }
}

impl<A: HttpApi> Connector for HttpDestination<A> {
    type Request = HttpBody;
    type Response = Answered;

    fn hard_limits(&self) -> BatchLimits {
        self.api.hard_limits()
    }

    fn encoded_len(&self, event: &Event) -> usize {
        self.api.encoded_len(event)
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
        self.api.encode(shipment)
    }

    fn request_size(&self, request: &HttpBody) -> usize {
        request.bytes.len()
    }

    async fn send(&self, request: &HttpBody) -> Result<Answered, SendError> {
        let sent = self.api.request_headers();
        let response = self
            .transport
            .post_to(self.transport.url(), request, &sent)
            .await?;
        Ok(Answered { response, sent })
    }

    fn classify(&self, answered: &Answered, events: &[Event]) -> Verdict {
        self.api
            .classify_sent(&answered.response, &answered.sent, events)
    }

    fn confirmation(&self) -> Option<ConfirmSettings> {
        self.api.confirmation()
    }

    async fn confirm(&self, receipts: &[Receipt]) -> Result<Vec<Receipt>, ConfirmError> {
        let Some((url, body)) = self.api.confirm_request(receipts)? else {
            return Ok(Vec::new());
        };
        let extra = self.api.request_headers();
        let response = self.transport.post_to(&url, &body, &extra).await?;
        self.api.confirmed(&response, &extra, receipts)
    }

    async fn health(&self) -> Result<(), String> {
        let Some(check) = self.api.health_probe() else {
            return Ok(());
        };
        let r = self
            .transport
            .get(check.url)
            .await
            .map_err(|e| e.to_string())?;
        match r.status {
            200 => Ok(()),
            s => {
                let body = String::from_utf8_lossy(&r.body);
                let quoted: String = body.chars().take(QUOTED_BODY).collect();
                Err(format!("{} answered {s}: {quoted}", check.name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::Secret;
    use switchyard_core::compress::{BodySink, BodyWriter};
    use switchyard_testkit::FakeHec;

    /// The least an API can be: HEC's endpoints, a body of the events as they are.
    struct Minimal {
        health: Option<HealthProbe>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Failed(String);

    impl HttpApi for Minimal {
        type Config = (String, bool);
        type Error = Failed;

        fn build(
            (base, health): &(String, bool),
            client: &ClientOptions,
        ) -> Result<(Minimal, HttpTransport), Failed> {
            let url = Url::parse(&format!("{base}/services/collector/event"))
                .map_err(|e| Failed(e.to_string()))?;
            let check = health.then(|| HealthProbe {
                url: url.join("/services/collector/health").unwrap(),
                name: "test health",
            });
            let transport = HttpTransport::new(url, client)
                .map_err(|e| Failed(e.to_string()))?
                .secret_header("authorization", "Splunk ", &Secret::new("tok"))
                .map_err(|e| Failed(e.to_string()))?;
            Ok((Minimal { health: check }, transport))
        }

        fn hard_limits(&self) -> BatchLimits {
            BatchLimits {
                max_events: 10,
                max_bytes: 1 << 20,
                max_linger: std::time::Duration::from_secs(1),
            }
        }

        fn encoded_len(&self, event: &Event) -> usize {
            event.raw().len()
        }

        fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<HttpBody>, EncodeError> {
            let mut body = BodyWriter::new(Default::default(), 0);
            for e in shipment.events() {
                body.staged().extend_from_slice(b"{\"event\":");
                shipment.write_event(e, body.staged());
                body.staged().push(b'}');
                body.commit();
            }
            Ok(Encoded::all(HttpBody::try_from(body)?))
        }

        fn classify(&self, response: &HttpResponse, _events: &[Event]) -> Verdict {
            let outcome = match response.status {
                200 => switchyard_core::Outcome::Delivered,
                s => switchyard_core::Outcome::Reject {
                    reason: s.to_string(),
                },
            };
            Verdict::new(response.status, outcome)
        }

        fn health_probe(&self) -> Option<HealthProbe> {
            self.health.clone()
        }
    }

    #[tokio::test]
    async fn sends_with_the_transport_and_counts_the_bytes_on_the_wire() {
        let fake = FakeHec::builder("tok").start().await.unwrap();
        let d = HttpDestination::<Minimal>::new(&(fake.url(), false), &ClientOptions::default())
            .unwrap();
        let events = [switchyard_testkit::event(
            r#"{"event":{"timestamp":1700000000000}}"#,
        )];
        let request = d.encode(Shipment::plain(&events)).unwrap().request;
        assert_eq!(d.request_size(&request), request.bytes.len());
        let answer = d.send(&request).await.unwrap();
        assert_eq!(
            d.classify(&answer, &events).outcome,
            switchyard_core::Outcome::Delivered
        );
        assert_eq!(fake.received_count(), 1, "{:?}", fake.violations());
    }

    #[tokio::test]
    async fn health_is_a_get_that_must_answer_200_and_quotes_the_answer_when_not() {
        let fake = FakeHec::builder("tok").start().await.unwrap();
        let opts = ClientOptions::default();
        let without = HttpDestination::<Minimal>::new(&(fake.url(), false), &opts).unwrap();
        assert_eq!(without.health().await, Ok(()));
        assert_eq!(fake.health_requests(), 0, "no endpoint, nothing asked");

        let with = HttpDestination::<Minimal>::new(&(fake.url(), true), &opts).unwrap();
        assert_eq!(with.health().await, Ok(()));
        assert_eq!(fake.health_requests(), 1);
        fake.fail_randomly(1000);
        let e = with.health().await.unwrap_err();
        assert!(
            e.starts_with("test health answered 503: ") && e.contains("Server is busy"),
            "{e}"
        );
    }
}
