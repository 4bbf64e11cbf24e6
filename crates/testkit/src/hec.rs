//! A strict fake Splunk HEC. It enforces what Splunk documents (token auth, gzip, the
//! concatenated-envelope body, envelope fields, size limit) and answers with Splunk's codes,
//! including the prefix-indexed `invalid-event-number` behaviour. Failures can be scripted.
//!
//! Indexer acknowledgement is learnt per token ([`Builder::ack`]): such a token demands a
//! channel on every request (missing: code 10; not a GUID: code 11), numbers the accepted
//! requests of each channel from 0 (`ackId`), and answers `/services/collector/ack` polls of
//! a channel it knows (unknown: code 11). A token without it answers those polls code 14.
//! Acknowledgement can be delayed by polls ([`Builder::ack_after_polls`]) or withheld
//! ([`FakeHec::withhold_acks`]).

use crate::fake::{Decoded, Recorder, Scripted, Seen, Server, decode_body, header, json, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Scripted HEC answers.
pub struct Reply;

impl Reply {
    pub fn code(status: u16, code: i64, text: &str, retry_after: Option<u64>) -> Scripted {
        Scripted {
            status,
            body: json!({"text": text, "code": code}),
            retry_after,
        }
    }
    pub fn busy() -> Scripted {
        Self::code(503, 9, "Server is busy", None)
    }
    pub fn queue_full(retry_after: Option<u64>) -> Scripted {
        Self::code(
            429,
            26,
            "HEC queue is at capacity and cannot process any more requests",
            retry_after,
        )
    }
}

type Poison = Box<dyn Fn(&Value) -> bool + Send + Sync>;

struct Hec {
    /// The next this-many requests answer only after `hang_for` (a client timeout), then 503.
    hangs: std::sync::atomic::AtomicU64,
    hang_for: Mutex<Duration>,
    token: String,
    max_content_length: usize,
    indexes: Option<HashSet<String>>,
    poison: Mutex<Option<Poison>>,
    /// Requests to the health endpoint (they are not recorded as [`Seen`]).
    health_requests: std::sync::atomic::AtomicU64,
    /// The token has indexer acknowledgement on.
    ack: bool,
    /// An ack id is acknowledged at this poll of it, not before (1: at the first).
    ack_after_polls: u32,
    /// No ack id is acknowledged while set.
    withhold_acks: AtomicBool,
    /// Per channel: the next ack id, and the ids not yet acknowledged with the polls each
    /// has had.
    channels: Mutex<HashMap<String, Channel>>,
    ack_polls: AtomicU64,
    /// Woken after every ack poll.
    polled: tokio::sync::Notify,
    acked: AtomicU64,
    rec: Recorder,
}

#[derive(Default)]
struct Channel {
    next: u64,
    unacked: HashMap<u64, u32>,
}

pub struct FakeHec {
    server: Server,
    state: Arc<Hec>,
}

/// Options for [`FakeHec`].
pub struct Builder {
    token: String,
    max_content_length: usize,
    indexes: Option<HashSet<String>>,
    retain: bool,
    delay: Duration,
    ack: bool,
    ack_after_polls: u32,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::tls::TlsServerConfig>>,
}

impl Builder {
    /// The token has indexer acknowledgement on (`useACK`): requests need a channel, and
    /// accepted ones answer an `ackId`.
    pub fn ack(mut self) -> Self {
        self.ack = true;
        self
    }
    /// An ack id is acknowledged only at its `n`th poll (a slow indexer); default 1.
    pub fn ack_after_polls(mut self, n: u32) -> Self {
        self.ack_after_polls = n.max(1);
        self
    }
    /// Serves HTTPS with `config` (see [`crate::tls::Pki::server_config`]).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<crate::tls::TlsServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }
    /// Requests whose body is over `bytes` get 413.
    pub fn max_content_length(mut self, bytes: usize) -> Self {
        self.max_content_length = bytes;
        self
    }
    /// Only these indexes are allowed for the token (others get code 7).
    pub fn indexes(mut self, names: &[&str]) -> Self {
        self.indexes = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Count events without keeping them (for long demo runs).
    pub fn counting_only(mut self) -> Self {
        self.retain = false;
        self
    }
    /// Every answer waits `delay` (a slow indexer).
    pub fn respond_after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub async fn start(self) -> std::io::Result<FakeHec> {
        let state = Arc::new(Hec {
            hangs: Default::default(),
            hang_for: Mutex::new(Duration::ZERO),
            token: self.token,
            max_content_length: self.max_content_length,
            indexes: self.indexes,
            poison: Mutex::default(),
            health_requests: Default::default(),
            ack: self.ack,
            ack_after_polls: self.ack_after_polls,
            withhold_acks: AtomicBool::new(false),
            channels: Mutex::default(),
            ack_polls: AtomicU64::new(0),
            polled: tokio::sync::Notify::new(),
            acked: AtomicU64::new(0),
            rec: Recorder::new(self.retain, self.delay),
        });
        let router = Router::new().fallback(handle);
        #[cfg(feature = "tls")]
        if let Some(config) = self.tls {
            return Ok(FakeHec {
                server: crate::fake::serve_tls(router, state.clone(), config).await?,
                state,
            });
        }
        Ok(FakeHec {
            server: serve(router, state.clone()).await?,
            state,
        })
    }
}

crate::stand_in_fake!(FakeHec);

impl FakeHec {
    pub fn builder(token: &str) -> Builder {
        Builder {
            token: token.into(),
            // Splunk Enterprise's default max_content_length.
            max_content_length: 838_860_800,
            indexes: None,
            retain: true,
            delay: Duration::ZERO,
            ack: false,
            ack_after_polls: 1,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The base URL to configure as `endpoint`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr
    }

    /// Connections refused during the TLS handshake.
    pub fn tls_refused(&self) -> u64 {
        self.server.tls_refused()
    }

    fn rec(&self) -> &Recorder {
        &self.state.rec
    }

    crate::recorder_accessors!();

    /// The next `n` requests get no answer for `wait` (longer than the client's timeout),
    /// and then 503 with nothing indexed.
    pub fn hang(&self, n: u64, wait: Duration) {
        *self.state.hang_for.lock().unwrap() = wait;
        self.state
            .hangs
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many health checks reached the fake.
    pub fn health_requests(&self) -> u64 {
        self.state
            .health_requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// While `withhold` is set, polls acknowledge nothing (an indexer that never indexes);
    /// once cleared, ids are acknowledged again as polled.
    pub fn withhold_acks(&self, withhold: bool) {
        self.state.withhold_acks.store(withhold, SeqCst);
    }

    /// Polls of `/services/collector/ack` answered (refused ones included).
    pub fn ack_polls(&self) -> u64 {
        self.state.ack_polls.load(SeqCst)
    }

    /// Waits until at least `n` ack polls were answered. False on timeout.
    pub async fn wait_for_ack_polls(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let polled = self.state.polled.notified();
            tokio::pin!(polled);
            polled.as_mut().enable();
            if self.ack_polls() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, polled).await.is_err() {
                return self.ack_polls() >= n;
            }
        }
    }

    /// Ack ids answered `true`, over every channel.
    pub fn acked(&self) -> u64 {
        self.state.acked.load(SeqCst)
    }

    /// The channels that sent accepted requests.
    pub fn channels(&self) -> Vec<String> {
        self.state
            .channels
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// Forgets every channel, as a restarted Splunk does: polls of them get code 11.
    pub fn forget_channels(&self) {
        self.state.channels.lock().unwrap().clear();
    }

    /// Envelopes for which `bad` holds are refused as Splunk refuses bad events: 400 code 6
    /// with `invalid-event-number`, the events before it indexed.
    pub fn reject_when(&self, bad: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        *self.state.poison.lock().unwrap() = Some(Box::new(bad));
    }
}

const ENVELOPE_KEYS: [&str; 7] = [
    "time",
    "host",
    "source",
    "sourcetype",
    "index",
    "event",
    "fields",
];

fn answer(status: u16, code: i64, text: &str, invalid_event: Option<usize>) -> Response {
    let mut body = json!({"text": text, "code": code});
    if let Some(i) = invalid_event {
        body["invalid-event-number"] = json!(i);
    }
    json(status, &body)
}

async fn handle(
    State(hec): State<Arc<Hec>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == "/services/collector/ack" {
        if method != Method::POST {
            return answer(405, 405, "Method Not Allowed", None);
        }
        let answer = hec.poll(&uri, &headers, &body);
        hec.ack_polls.fetch_add(1, SeqCst);
        hec.polled.notify_waiters();
        return answer;
    }
    if path == "/services/collector/health" || path == "/services/collector/health/1.0" {
        hec.health_requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if hec.rec.is_down() {
            return answer(503, 9, "Server is busy", None);
        }
        return answer(200, 17, "HEC is healthy", None);
    }
    if !matches!(
        path,
        "/services/collector" | "/services/collector/event" | "/services/collector/event/1.0"
    ) {
        return answer(
            404,
            404,
            "The requested URL was not found on this server.",
            None,
        );
    }
    if method != Method::POST {
        return answer(405, 405, "Method Not Allowed", None);
    }
    hec.rec.pause().await;
    let hung = hec
        .hangs
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if hung {
        let wait = *hec.hang_for.lock().unwrap();
        tokio::time::sleep(wait).await;
        hec.rec.saw(Seen {
            status: 503,
            code: 9,
            ..Seen::default()
        });
        return answer(503, 9, "Server is busy", None);
    }
    let (status, code, items, resp) = hec.ingest(&uri, &headers, &body);
    hec.rec.saw(Seen {
        status,
        code,
        items,
        compressed: header(&headers, "content-encoding") == Some("gzip"),
        body_bytes: body.len(),
    });
    resp
}

/// Whether `s` is a GUID as Splunk wants a channel: 8-4-4-4-12 hex digits.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Hec {
    /// The token's problem with `headers`' `Authorization`, as (status, code, text).
    fn unauthorized(&self, headers: &HeaderMap) -> Option<(u16, i64, &'static str)> {
        match header(headers, "authorization") {
            None => Some((401, 2, "Token is required")),
            Some(a) => match a.strip_prefix("Splunk ") {
                None => Some((401, 3, "Invalid authorization")),
                Some(t) if t != self.token => Some((403, 4, "Invalid token")),
                Some(_) => None,
            },
        }
    }

    /// The request's channel: the header, or `?channel=`; both given must agree.
    fn channel(&self, uri: &Uri, headers: &HeaderMap) -> Option<String> {
        // A GUID needs no percent-decoding.
        let query = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix("channel="))
                .map(str::to_owned)
        });
        let head = header(headers, "x-splunk-request-channel").map(str::to_owned);
        if let (Some(q), Some(h)) = (&query, &head)
            && q != h
        {
            self.rec.violation(format!(
                "channel {q:?} in the query but {h:?} in the header"
            ));
        }
        head.or(query)
    }

    /// `/services/collector/ack`: which of the ids polled are indexed.
    fn poll(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some((status, code, text)) = self.unauthorized(headers) {
            return answer(status, code, text, None);
        }
        if !self.ack {
            return answer(400, 14, "ACK is disabled", None);
        }
        let Some(channel) = self.channel(uri, headers) else {
            return answer(400, 10, "Data channel is missing", None);
        };
        let ids = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            v.get("acks")?
                .as_array()?
                .iter()
                .map(Value::as_u64)
                .collect::<Option<Vec<u64>>>()
        });
        let Some(ids) = ids else {
            self.rec
                .violation("ack poll body is not {\"acks\":[ids]}".into());
            return answer(400, 6, "Invalid data format", None);
        };
        let mut channels = self.channels.lock().unwrap();
        let Some(state) = channels.get_mut(&channel) else {
            return answer(400, 11, "Invalid data channel", None);
        };
        let withhold = self.withhold_acks.load(SeqCst);
        let mut acks = serde_json::Map::new();
        for id in ids {
            // An id answered true is forgotten: asked again, it is false.
            let indexed = match state.unacked.get_mut(&id) {
                Some(polls) if !withhold => {
                    *polls += 1;
                    *polls >= self.ack_after_polls
                }
                _ => false,
            };
            if indexed {
                state.unacked.remove(&id);
                self.acked.fetch_add(1, SeqCst);
            }
            acks.insert(id.to_string(), Value::Bool(indexed));
        }
        json(200, &json!({ "acks": acks }))
    }

    /// The ack channel of a request to a token with ack on, or its refusal.
    fn ack_channel(&self, uri: &Uri, headers: &HeaderMap) -> Result<String, (i64, &'static str)> {
        match self.channel(uri, headers) {
            None => Err((10, "Data channel is missing")),
            Some(c) if !is_guid(&c) => Err((11, "Invalid data channel")),
            Some(c) => Ok(c),
        }
    }

    /// A new ack id on `channel` for an accepted request.
    fn next_ack_id(&self, channel: String) -> u64 {
        let mut channels = self.channels.lock().unwrap();
        let state = channels.entry(channel).or_default();
        let id = state.next;
        state.next += 1;
        state.unacked.insert(id, 0);
        id
    }

    /// Returns (status, code, envelopes parsed, response).
    fn ingest(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> (u16, i64, usize, Response) {
        let done = |status: u16, code: i64, text: &str| {
            (status, code, 0, answer(status, code, text, None))
        };
        if let Some((status, code, text)) = self.unauthorized(headers) {
            return done(status, code, text);
        }
        let channel = if self.ack {
            match self.ack_channel(uri, headers) {
                Ok(c) => Some(c),
                Err((code, text)) => return done(400, code, text),
            }
        } else {
            None
        };
        if let Some(s) = self.rec.next_scripted() {
            let code = s.body["code"].as_i64().unwrap_or(0);
            return (s.status, code, 0, s.response());
        }
        if body.len() > self.max_content_length {
            return done(
                413,
                413,
                "Content-Length of the request exceeds max_content_length",
            );
        }
        // HEC decodes gzip (deflate too, here); zstd it does not.
        if header(headers, "content-encoding") == Some("zstd") {
            return done(415, 415, "Unsupported Media Type");
        }
        let body = match decode_body(header(headers, "content-encoding"), body) {
            Decoded::Body(b) => b,
            Decoded::Unsupported(_) => return done(415, 415, "Unsupported Media Type"),
            Decoded::Corrupt(_) => return done(400, 6, "Invalid data format"),
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return done(400, 5, "No data");
        }
        let mut accepted = Vec::new();
        let mut failure = None;
        for (i, item) in serde_json::Deserializer::from_slice(&body)
            .into_iter::<Value>()
            .enumerate()
        {
            match self.check_envelope(item) {
                Ok(v) => accepted.push(v),
                Err((code, text)) => {
                    failure = Some((i, code, text));
                    break;
                }
            }
        }
        let parsed = accepted.len() + usize::from(failure.is_some());
        self.rec.accept(accepted);
        match failure {
            None => {
                let mut ok = json!({"text": "Success", "code": 0});
                if let Some(channel) = channel {
                    ok["ackId"] = json!(self.next_ack_id(channel));
                }
                (200, 0, parsed, json(200, &ok))
            }
            Some((i, code, text)) => (400, code, parsed, answer(400, code, text, Some(i))),
        }
    }

    /// Splunk's per-object rules, made strict: what Splunk would silently mangle is refused
    /// here and recorded as a violation.
    fn check_envelope(
        &self,
        item: Result<Value, serde_json::Error>,
    ) -> Result<Value, (i64, &'static str)> {
        let Ok(Value::Object(obj)) = item else {
            self.rec.violation(
                "body element is not a JSON object (HEC wants concatenated objects, not an array)"
                    .into(),
            );
            return Err((6, "Invalid data format"));
        };
        if let Some(k) = obj.keys().find(|k| !ENVELOPE_KEYS.contains(&k.as_str())) {
            self.rec.violation(format!("unknown envelope key {k:?}"));
            return Err((6, "Invalid data format"));
        }
        match obj.get("event") {
            None => return Err((12, "Event field is required")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err((13, "Event field cannot be blank"));
            }
            Some(Value::Null) | Some(Value::Bool(false)) => return Err((6, "Invalid data format")),
            Some(_) => {}
        }
        if let Some(t) = obj.get("time") {
            match t.as_f64() {
                Some(secs) if secs < 1e11 => {}
                Some(_) => {
                    self.rec
                        .violation(format!("time {t} is not in epoch seconds"));
                    return Err((6, "Invalid data format"));
                }
                None => return Err((6, "Invalid data format")),
            }
        }
        for key in ["host", "source", "sourcetype", "index"] {
            if obj.get(key).is_some_and(|v| !v.is_string()) {
                self.rec.violation(format!("{key} is not a string"));
                return Err((6, "Invalid data format"));
            }
        }
        if let (Some(allowed), Some(index)) =
            (&self.indexes, obj.get("index").and_then(Value::as_str))
            && !allowed.contains(index)
        {
            return Err((7, "Incorrect index"));
        }
        let obj = Value::Object(obj);
        if self
            .poison
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|bad| bad(&obj))
        {
            return Err((6, "Invalid data format"));
        }
        Ok(obj)
    }
}
