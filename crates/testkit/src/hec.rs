//! A strict fake Splunk HEC. It enforces what Splunk documents (token auth, gzip, the
//! concatenated-envelope body, envelope fields, size limit) and answers with Splunk's codes,
//! including the prefix-indexed `invalid-event-number` behaviour. Failures can be scripted.

use crate::fake::{Server, decode_body, wait_until};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A scripted answer for one upcoming request (nothing of that request is indexed).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub code: i64,
    pub text: &'static str,
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn busy() -> Reply {
        Reply {
            status: 503,
            code: 9,
            text: "Server is busy",
            retry_after: None,
        }
    }
    pub fn queue_full(retry_after: Option<u64>) -> Reply {
        Reply {
            status: 429,
            code: 26,
            text: "HEC queue is at capacity and cannot process any more requests",
            retry_after,
        }
    }
}

/// What the fake saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub code: i64,
    /// Envelopes parsed from the body (0 if it was refused before parsing).
    pub envelopes: usize,
    pub gzip: bool,
    pub body_bytes: usize,
}

type Poison = Box<dyn Fn(&Value) -> bool + Send + Sync>;

struct Hec {
    token: String,
    /// Answers wait this long (a slow indexer).
    delay: Duration,
    max_content_length: usize,
    indexes: Option<HashSet<String>>,
    retain: bool,
    script: Mutex<VecDeque<Reply>>,
    poison: Mutex<Option<Poison>>,
    indexed: Mutex<Vec<Value>>,
    indexed_count: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    violations: Mutex<Vec<String>>,
    notify: Notify,
}

pub struct FakeHec {
    server: Server,
    state: Arc<Hec>,
}

/// Options for [`FakeHec`].
pub struct Builder {
    token: String,
    delay: Duration,
    max_content_length: usize,
    indexes: Option<HashSet<String>>,
    retain: bool,
}

impl Builder {
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
    /// Every answer waits `delay` (a slow indexer).
    pub fn respond_after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Count events without keeping them (for long demo runs).
    pub fn counting_only(mut self) -> Self {
        self.retain = false;
        self
    }
    pub async fn start(self) -> std::io::Result<FakeHec> {
        let state = Arc::new(Hec {
            token: self.token,
            delay: self.delay,
            max_content_length: self.max_content_length,
            indexes: self.indexes,
            retain: self.retain,
            script: Mutex::default(),
            poison: Mutex::default(),
            indexed: Mutex::default(),
            indexed_count: AtomicU64::new(0),
            seen: Mutex::default(),
            violations: Mutex::default(),
            notify: Notify::new(),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        Ok(FakeHec {
            server: Server::start(app).await?,
            state,
        })
    }
}

impl FakeHec {
    pub fn builder(token: &str) -> Builder {
        Builder {
            token: token.into(),
            delay: Duration::ZERO,
            // Splunk Enterprise's default max_content_length.
            max_content_length: 838_860_800,
            indexes: None,
            retain: true,
        }
    }

    /// The base URL to configure as `endpoint`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The next requests get these answers, in order, before normal service resumes.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Drops the scripted answers not yet used: normal service resumes.
    pub fn clear_script(&self) {
        self.state.script.lock().unwrap().clear();
    }

    /// Envelopes for which `bad` holds are refused as Splunk refuses bad events: 400 code 6
    /// with `invalid-event-number`, the events before it indexed.
    pub fn reject_when(&self, bad: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        *self.state.poison.lock().unwrap() = Some(Box::new(bad));
    }

    /// Every indexed envelope, in order.
    pub fn indexed(&self) -> Vec<Value> {
        self.state.indexed.lock().unwrap().clone()
    }

    pub fn indexed_count(&self) -> u64 {
        self.state.indexed_count.load(Relaxed)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Protocol mistakes the client made (wrong time unit, unknown envelope keys, …).
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().unwrap().clone()
    }

    /// Waits until at least `n` envelopes are indexed.
    pub async fn wait_for_indexed(&self, n: u64, timeout: Duration) -> bool {
        wait_until(&self.state.notify, timeout, || self.indexed_count() >= n).await
    }

    /// Waits until `check` holds over the requests seen so far.
    pub async fn wait_for_seen(&self, timeout: Duration, check: impl Fn(&[Seen]) -> bool) -> bool {
        wait_until(&self.state.notify, timeout, || {
            check(&self.state.seen.lock().unwrap())
        })
        .await
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

fn answer(status: u16, code: i64, text: &str, extra: Option<(&str, usize)>) -> Response {
    let mut body = json!({"text": text, "code": code});
    if let Some((k, v)) = extra {
        body[k] = json!(v);
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
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
    if !hec.delay.is_zero() {
        tokio::time::sleep(hec.delay).await;
    }
    let gzip = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    let (status, code, envelopes, resp) = hec.ingest(&headers, &body);
    hec.seen.lock().unwrap().push(Seen {
        status,
        code,
        envelopes,
        gzip,
        body_bytes: body.len(),
    });
    hec.notify.notify_waiters();
    resp
}

impl Hec {
    fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }

    /// Returns (status, code, envelopes parsed, response).
    fn ingest(&self, headers: &HeaderMap, body: &[u8]) -> (u16, i64, usize, Response) {
        let done = |status: u16, code: i64, text: &str| {
            (status, code, 0, answer(status, code, text, None))
        };
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            None => return done(401, 2, "Token is required"),
            Some(a) => match a.strip_prefix("Splunk ") {
                None => return done(401, 3, "Invalid authorization"),
                Some(t) if t != self.token => return done(403, 4, "Invalid token"),
                Some(_) => {}
            },
        }
        if let Some(r) = self.script.lock().unwrap().pop_front() {
            let mut resp = answer(r.status, r.code, r.text, None);
            if let Some(s) = r.retry_after {
                resp.headers_mut().insert("retry-after", s.into());
            }
            return (r.status, r.code, 0, resp);
        }
        if body.len() > self.max_content_length {
            return done(
                413,
                413,
                "Content-Length of the request exceeds max_content_length",
            );
        }
        let encoding = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok());
        let body = match decode_body(encoding, body) {
            Ok(b) => b,
            Err(e) if e.starts_with("unsupported") => {
                return done(415, 415, "Unsupported Media Type");
            }
            Err(_) => return done(400, 6, "Invalid data format"),
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
        let n = accepted.len() as u64;
        if self.retain {
            self.indexed.lock().unwrap().extend(accepted);
        }
        self.indexed_count.fetch_add(n, Relaxed);
        match failure {
            None => (200, 0, parsed, answer(200, 0, "Success", None)),
            Some((i, code, text)) => (
                400,
                code,
                parsed,
                answer(400, code, text, Some(("invalid-event-number", i))),
            ),
        }
    }

    /// Splunk's per-object rules, made strict: what Splunk would silently mangle is refused
    /// here and recorded as a violation.
    fn check_envelope(
        &self,
        item: Result<Value, serde_json::Error>,
    ) -> Result<Value, (i64, &'static str)> {
        let Ok(Value::Object(obj)) = item else {
            self.violation(
                "body element is not a JSON object (HEC wants concatenated objects, not an array)"
                    .into(),
            );
            return Err((6, "Invalid data format"));
        };
        if let Some(k) = obj.keys().find(|k| !ENVELOPE_KEYS.contains(&k.as_str())) {
            self.violation(format!("unknown envelope key {k:?}"));
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
                    self.violation(format!("time {t} is not in epoch seconds"));
                    return Err((6, "Invalid data format"));
                }
                None => return Err((6, "Invalid data format")),
            }
        }
        for key in ["host", "source", "sourcetype", "index"] {
            if obj.get(key).is_some_and(|v| !v.is_string()) {
                self.violation(format!("{key} is not a string"));
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
