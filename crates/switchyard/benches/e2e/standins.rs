//! Fast stand-ins for the destinations, from what each kind's descriptor says of its wire
//! protocol (`Wire`). Each answers as its API does (auth header checked, success body in the
//! API's shape), decodes every body it gets (Content-Encoding, and Firehose's JSON and
//! base64), and tallies the benchmark marker of every event in it.
//! Nothing more: the strict fakes of `switchyard-testkit` check formats and limits in the
//! test suite, and here the router, not the sinks, should be what costs CPU.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use memchr::memmem;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use switchyard_destination::{Framing, Wire};
use switchyard_testkit::fake::{Decoded, decode_body};
use tokio::sync::Notify;

/// Every benchmark event carries `"@swb:<12-digit sequence>:<16-digit produce time in µs>"`
/// in its `event_id`: fixed width, so events of a scenario are all one size.
pub const MARKER: &[u8] = b"@swb:";
pub const SEQ_DIGITS: usize = 12;
pub const TIME_DIGITS: usize = 16;
pub const MARKER_LEN: usize = MARKER.len() + SEQ_DIGITS + 1 + TIME_DIGITS;

/// Firehose bills ingestion per record rounded up to 5 KB ("a 3 KB record is billed as 5 KB, a
/// 12 KB record as 15 KB", aws.amazon.com/firehose/pricing). AWS does not say whether its KB is
/// 1,000 or 1,024 bytes; 5,120 is taken, the larger (and so the bill not understated).
pub const FIREHOSE_BILLING_UNIT: u64 = 5 * 1024;

/// What all stand-ins of a run add up to, and a wake-up for whoever waits on it.
#[derive(Default)]
pub struct Progress {
    pub distinct: AtomicU64,
    /// Refused or undecodable requests: a benchmark with any is invalid.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Wall-clock µs of the latest first-time arrival.
    pub last_arrival_us: AtomicU64,
    pub changed: Notify,
}

impl Progress {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        self.changed.notify_waiters();
    }

    /// Resolves once `target` distinct deliveries arrived, or with the first error.
    pub async fn reached(&self, target: u64) -> Result<(), String> {
        loop {
            let changed = self.changed.notified();
            if let Some(e) = self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Err(e);
            }
            if self.distinct.load(Relaxed) >= target {
                return Ok(());
            }
            changed.await;
        }
    }
}

/// One destination's record of which events reached it.
pub struct Tally {
    seen: Vec<AtomicU64>,
    pub duplicates: AtomicU64,
    pub requests: AtomicU64,
    /// Bytes of the request bodies as sent: what crosses the network (egress).
    pub body_bytes: AtomicU64,
    /// Bytes of the bodies after Content-Encoding is undone: what a destination that bills by
    /// ingested volume counts. Every accepted request, retries and duplicates included.
    pub decoded_bytes: AtomicU64,
    /// Requests that came with a Content-Encoding (compressed).
    pub encoded_requests: AtomicU64,
    /// Firehose only: records, their `Data` bytes (base64 decoded), and those bytes as billed,
    /// each record rounded up to `FIREHOSE_BILLING_UNIT` (an empty one billed as one unit).
    pub records: AtomicU64,
    pub record_bytes: AtomicU64,
    pub record_billed_bytes: AtomicU64,
    /// Events from this sequence number on have their latency recorded.
    pub latency_from: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    progress: Arc<Progress>,
}

impl Tally {
    pub fn new(capacity: u64, progress: Arc<Progress>) -> Tally {
        Tally {
            seen: (0..capacity.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            duplicates: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            decoded_bytes: AtomicU64::new(0),
            encoded_requests: AtomicU64::new(0),
            records: AtomicU64::new(0),
            record_bytes: AtomicU64::new(0),
            record_billed_bytes: AtomicU64::new(0),
            latency_from: AtomicU64::new(u64::MAX),
            latencies_us: Mutex::default(),
            progress,
        }
    }

    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w.load(Relaxed) & (1 << (seq % 64)) != 0)
    }

    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.latencies_us.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks every event whose marker is in `body`; returns how many markers it held.
    fn record(&self, body: &[u8], now_us: u64) -> Result<usize, String> {
        let (mut fresh, mut found) = (0u64, 0usize);
        let mut latencies = Vec::new();
        let latency_from = self.latency_from.load(Relaxed);
        for at in memmem::find_iter(body, MARKER) {
            let digits = body
                .get(at + MARKER.len()..at + MARKER_LEN)
                .ok_or("a marker cut short")?;
            let seq = number(&digits[..SEQ_DIGITS])?;
            let produced = number(&digits[SEQ_DIGITS + 1..])?;
            let word = self
                .seen
                .get((seq / 64) as usize)
                .ok_or_else(|| format!("sequence {seq} beyond the run"))?;
            let bit = 1 << (seq % 64);
            if word.fetch_or(bit, Relaxed) & bit == 0 {
                fresh += 1;
                if seq >= latency_from {
                    latencies.push(now_us.saturating_sub(produced).min(u32::MAX as u64) as u32);
                }
            } else {
                self.duplicates.fetch_add(1, Relaxed);
            }
            found += 1;
        }
        if !latencies.is_empty() {
            self.latencies_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(latencies);
        }
        if fresh > 0 {
            self.progress.last_arrival_us.fetch_max(now_us, Relaxed);
            self.progress.distinct.fetch_add(fresh, Relaxed);
            self.progress.changed.notify_waiters();
        }
        Ok(found)
    }
}

fn number(digits: &[u8]) -> Result<u64, String> {
    digits.iter().try_fold(0u64, |n, d| match d {
        b'0'..=b'9' => Ok(n * 10 + u64::from(d - b'0')),
        _ => Err(format!(
            "bad marker digits {:?}",
            String::from_utf8_lossy(digits)
        )),
    })
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct StandIn {
    /// The connector it stands in for, for messages.
    id: String,
    wire: Wire,
    /// The credential the router must present (API key, token, or AWS access key id).
    secret: String,
    /// Answers 503 to every delivery: the destination is down.
    down: bool,
    tally: Arc<Tally>,
}

/// A stand-in for connector `id` speaking `wire`, on a free 127.0.0.1 port; returns its base
/// URL. It stops with the runtime.
pub async fn start(
    id: &str,
    wire: Wire,
    secret: &str,
    down: bool,
    tally: Arc<Tally>,
) -> std::io::Result<String> {
    let state = Arc::new(StandIn {
        id: id.into(),
        wire,
        secret: secret.into(),
        down,
        tally,
    });
    let app = Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn handle(
    State(s): State<Arc<StandIn>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !s.authorized(&headers) {
        s.tally
            .progress
            .error(format!("{} stand-in: request without the credential", s.id));
        return (StatusCode::FORBIDDEN, "{}").into_response();
    }
    let health = s
        .wire
        .health_request
        .is_some_and(|(name, value)| headers.get(name).is_some_and(|v| v == value));
    if method == Method::GET || health {
        return s.answer(200, s.wire.healthy.clone());
    }
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "{}").into_response();
    }
    let now = now_us();
    s.tally.requests.fetch_add(1, Relaxed);
    s.tally.body_bytes.fetch_add(body.len() as u64, Relaxed);
    match s.accept(&headers, &body, now) {
        Ok(records) => {
            let (status, body) = s.wire.accepted;
            s.answer(status, body(records))
        }
        Err(e) => {
            s.tally.progress.error(format!("{} stand-in: {e}", s.id));
            (StatusCode::BAD_REQUEST, "{}").into_response()
        }
    }
}

#[derive(Deserialize)]
struct PutRecordBatch<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(rename = "Data")]
    data: &'a str,
}

impl StandIn {
    fn authorized(&self, h: &HeaderMap) -> bool {
        let header = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (self.wire.authorized)(&header, &self.secret)
    }

    /// Decodes the body and tallies its events; returns how many records it held (Firehose
    /// answers per record).
    fn accept(&self, h: &HeaderMap, body: &[u8], now: u64) -> Result<usize, String> {
        let encoding = h.get("content-encoding").and_then(|v| v.to_str().ok());
        let body = match decode_body(encoding, body) {
            Decoded::Body(b) => b,
            Decoded::Unsupported(e) => return Err(format!("unexpected content-encoding {e}")),
            Decoded::Corrupt(e) => return Err(format!("corrupt body: {e}")),
        };
        let body = &body[..];
        self.tally
            .decoded_bytes
            .fetch_add(body.len() as u64, Relaxed);
        if encoding.is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
            self.tally.encoded_requests.fetch_add(1, Relaxed);
        }
        if self.wire.framing == Framing::Embedded {
            return self.tally.record(body, now);
        }
        let put: PutRecordBatch<'_> =
            serde_json::from_slice(body).map_err(|e| format!("PutRecordBatch body: {e}"))?;
        let mut data = Vec::new();
        for r in &put.records {
            data.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(r.data, &mut data)
                .map_err(|e| format!("record Data is not base64: {e}"))?;
            let len = data.len() as u64;
            self.tally.records.fetch_add(1, Relaxed);
            self.tally.record_bytes.fetch_add(len, Relaxed);
            self.tally.record_billed_bytes.fetch_add(
                len.div_ceil(FIREHOSE_BILLING_UNIT).max(1) * FIREHOSE_BILLING_UNIT,
                Relaxed,
            );
            self.tally.record(&data, now)?;
        }
        Ok(put.records.len())
    }

    fn answer(&self, status: u16, body: String) -> Response {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            [("content-type", self.wire.content_type)],
            body,
        )
            .into_response()
    }
}
