//! The contract between the delivery engine and a destination.
//!
//! A destination says how to encode a batch, how to send it and what the answer means. Every
//! other decision (when to retry, how long to wait, what to acknowledge) is the engine's, so
//! delivery semantics are the same for every destination.

use crate::batch::BatchLimits;
use crate::event::Event;
use crate::shipment::Shipment;
use std::future::Future;
use std::time::Duration;

/// A destination API.
pub trait Connector: Send + Sync + 'static {
    /// An encoded request, ready to send (and to send again on a whole-request retry).
    type Request: Send + Sync;
    /// What came back, before classification.
    type Response: Send;

    /// The API's own limits; configured batch limits are clamped to these.
    fn hard_limits(&self) -> BatchLimits;

    /// Bytes `event` adds to an uncompressed request body.
    fn encoded_len(&self, event: &Event) -> usize;

    /// Builds one request from the shipment's events. An encoder may leave events out (with
    /// a reason) and report adjustments it made; see [`Encoded`]. Each event's JSON is written
    /// with [`Shipment::write_event`], which adds the router's collector_observability
    /// records when the connector appends them; [`Shipment::event_json_len`] is its length.
    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<Self::Request>, EncodeError>;

    /// Bytes `request` puts on the wire (for the bytes-sent counter).
    fn request_size(&self, request: &Self::Request) -> usize;

    fn send(
        &self,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Self::Response, SendError>> + Send;

    /// What `response` means for the `events` that were sent, in order.
    fn classify(&self, response: &Self::Response, events: &[Event]) -> Verdict;

    /// A cheap check that the destination is reachable and accepts these credentials, run at
    /// startup for the readiness probe. Destinations without such an endpoint keep the
    /// default.
    fn health(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// How the engine asks for confirmations, when this destination answers accepted requests
    /// with a [`Receipt`] ([`Outcome::Accepted`]) and confirms later that it stored their
    /// events (Splunk HEC's indexer acknowledgement). None, the default: answers are final.
    fn confirmation(&self) -> Option<ConfirmSettings> {
        None
    }

    /// Which of `receipts` the destination now confirms. A receipt left out is not confirmed
    /// yet; the engine asks again until its timeout. Only called when
    /// [`Connector::confirmation`] is Some.
    fn confirm(
        &self,
        receipts: &[Receipt],
    ) -> impl Future<Output = Result<Vec<Receipt>, ConfirmError>> + Send {
        let _ = receipts;
        async { Err(ConfirmError::Unsupported) }
    }
}

/// A destination's token for an accepted request whose events it has yet to confirm stored
/// (HEC's `ackId`). Unique among the connector's unconfirmed requests.
pub type Receipt = u64;

/// How a destination's receipts are confirmed (docs/payloads.md, "HEC indexer
/// acknowledgement").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmSettings {
    /// Between two rounds of asking which receipts are confirmed.
    pub poll_interval: Duration,
    /// Receipts awaiting confirmation at once; at the bound the connector sends nothing more
    /// until some are confirmed or time out (backpressure, not loss).
    pub max_pending: usize,
    /// A receipt not confirmed this long after it was given is given up on: its events are
    /// sent again (the destination may then store them twice).
    pub timeout: Duration,
}

/// Asking for confirmations failed; the receipts stay unconfirmed and are asked about again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfirmError {
    #[error("this destination confirms nothing")]
    Unsupported,
    #[error(transparent)]
    Send(#[from] SendError),
    /// The destination answered, but not with confirmations; the text says what it said.
    #[error("{0}")]
    Refused(String),
}

/// What an encoder made of a batch.
#[derive(Debug)]
pub struct Encoded<R> {
    pub request: R,
    /// Events left out of the request because the destination would refuse or silently drop
    /// them, by index into the shipment's events, with the reason. The engine rejects them.
    pub rejected: Vec<(usize, String)>,
    /// Adjustments made to fit the API (a value truncated, attributes dropped), one entry
    /// per occurrence; the engine counts them by kind and logs them, rate-limited.
    pub fixes: Vec<Fix>,
}

/// One adjustment an encoder made to one event so the destination keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// Index of the event in the shipment's events.
    pub event: usize,
    /// The metric label, e.g. `too_many_attributes`.
    pub kind: &'static str,
    /// What exactly changed (the attributes dropped, the timestamp replaced), for the log.
    pub detail: Option<String>,
}

impl Fix {
    pub fn new(event: usize, kind: &'static str) -> Self {
        Fix {
            event,
            kind,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl<R> Encoded<R> {
    /// Every event encoded as it is.
    pub fn all(request: R) -> Self {
        Encoded {
            request,
            rejected: Vec::new(),
            fixes: Vec::new(),
        }
    }
}

/// A request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded request is over the API's size limit: the engine splits the events.
    #[error("encoded request of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("encoding failed: {0}")]
    Failed(String),
}

impl From<crate::compress::CompressError> for EncodeError {
    /// A body that could not be compressed is not whole: the events are not sent.
    fn from(e: crate::compress::CompressError) -> Self {
        EncodeError::Failed(e.to_string())
    }
}

/// No answer came back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("request timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    /// Any other transport failure. `retryable` is false only when resending cannot help
    /// (for example a request the client refuses to build).
    #[error("transport error: {message}")]
    Transport { message: String, retryable: bool },
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Timeout | SendError::Connect(_) => true,
            SendError::Transport { retryable, .. } => *retryable,
        }
    }
}

/// What one response means.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The status reported in timings and logs; 0 when there was no answer.
    pub status_code: u16,
    pub outcome: Outcome,
    /// The destination's `Retry-After`, which overrides the backoff schedule.
    pub retry_after: Option<Duration>,
    /// Events of an accepted request that the destination says it dropped without saying
    /// which (OTLP's partial success). They cannot be retried or dead-lettered one by one,
    /// and the protocol forbids resending the request: the engine counts and logs them.
    pub dropped: Option<Dropped>,
}

/// A count of events a destination accepted and then dropped, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub reason: String,
}

impl Verdict {
    pub fn new(status_code: u16, outcome: Outcome) -> Self {
        Verdict {
            status_code,
            outcome,
            retry_after: None,
            dropped: None,
        }
    }

    /// This verdict, with `count` of its events dropped by the destination for `reason`.
    pub fn with_dropped(mut self, count: u64, reason: String) -> Self {
        self.dropped = (count > 0).then_some(Dropped { count, reason });
        self
    }
}

/// The one place where "delivered" is defined.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every event was accepted.
    Delivered,
    /// Every event was accepted, but the destination has yet to confirm it stored them: they
    /// count as delivered only once [`Connector::confirm`] confirms this receipt.
    Accepted(Receipt),
    /// Nothing was accepted; the same events may succeed later.
    Retry { reason: String },
    /// Nothing was accepted and resending cannot help.
    Reject { reason: String },
    /// The request was too large: send the events again in smaller requests.
    Split,
    /// Each event has its own verdict, in the order sent.
    Partial(Vec<EventVerdict>),
}

impl Outcome {
    /// The destination took every event (final or awaiting confirmation).
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::Accepted(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventVerdict {
    Delivered,
    Retry,
    Reject { reason: String },
}
