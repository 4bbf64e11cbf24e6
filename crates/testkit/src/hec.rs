//! A strict fake Splunk HEC. It enforces what Splunk documents (token auth, gzip, the
//! concatenated-envelope body, envelope fields, size limit) and answers with Splunk's codes,
//! including the prefix-indexed `invalid-event-number` behaviour. Failures can be scripted.

use crate::fake::{Decoded, Recorder, Scripted, Seen, Server, decode_body, header, json, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashSet;
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
    rec: Recorder,
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
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::tls::TlsServerConfig>>,
}

impl Builder {
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
    let (status, code, items, resp) = hec.ingest(&headers, &body);
    hec.rec.saw(Seen {
        status,
        code,
        items,
        compressed: header(&headers, "content-encoding") == Some("gzip"),
        body_bytes: body.len(),
    });
    resp
}

impl Hec {
    /// Returns (status, code, envelopes parsed, response).
    fn ingest(&self, headers: &HeaderMap, body: &[u8]) -> (u16, i64, usize, Response) {
        let done = |status: u16, code: i64, text: &str| {
            (status, code, 0, answer(status, code, text, None))
        };
        match header(headers, "authorization") {
            None => return done(401, 2, "Token is required"),
            Some(a) => match a.strip_prefix("Splunk ") {
                None => return done(401, 3, "Invalid authorization"),
                Some(t) if t != self.token => return done(403, 4, "Invalid token"),
                Some(_) => {}
            },
        }
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
            None => (200, 0, parsed, answer(200, 0, "Success", None)),
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
