//! A strict fake of Datadog's logs intake (`POST /api/v2/logs`): `DD-API-KEY`, gzip/deflate/zstd,
//! a JSON array of at most 1000 logs, 5 MB uncompressed, 202 `{}`. What Datadog would accept
//! but silently mangle (a log over 1 MB, a timestamp it will not index) is recorded as a
//! violation.

use crate::fake::{Decoded, Recorder, Scripted, Seen, Server, decode_body, header, json, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MAX_PAYLOAD: usize = 5_000_000;
pub const MAX_ENTRIES: usize = 1000;
pub const MAX_LOG: usize = 1_000_000;

/// Scripted Datadog answers, JSON:API style.
pub fn reply(status: u16, title: &str) -> Scripted {
    Scripted {
        status,
        body: json!({"errors": [{"status": status.to_string(), "title": title}]}),
        retry_after: None,
    }
}

struct Dd {
    api_key: String,
    max_payload: usize,
    rec: Recorder,
}

pub struct FakeDatadog {
    server: Server,
    state: Arc<Dd>,
}

crate::stand_in_fake!(FakeDatadog);

impl FakeDatadog {
    pub async fn start(api_key: &str) -> std::io::Result<FakeDatadog> {
        Self::start_with(api_key, MAX_PAYLOAD, true).await
    }

    /// `max_payload`: uncompressed bytes over which requests get 413; `retain`: keep logs.
    pub async fn start_with(
        api_key: &str,
        max_payload: usize,
        retain: bool,
    ) -> std::io::Result<FakeDatadog> {
        let state = Arc::new(Dd {
            api_key: api_key.into(),
            max_payload,
            rec: Recorder::new(retain, Duration::ZERO),
        });
        Ok(FakeDatadog {
            server: serve(Router::new().fallback(handle), state.clone()).await?,
            state,
        })
    }

    /// The base URL to configure as `endpoint`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn rec(&self) -> &Recorder {
        &self.state.rec
    }

    crate::recorder_accessors!();
}

async fn handle(
    State(dd): State<Arc<Dd>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != "/api/v2/logs" {
        return json(404, &json!({"errors": ["Not Found"]}));
    }
    if method != Method::POST {
        return json(405, &json!({"errors": ["Method Not Allowed"]}));
    }
    let encoding = header(&headers, "content-encoding");
    let (status, items, resp) = dd.ingest(&headers, &body);
    dd.rec.saw(Seen {
        status,
        code: 0,
        items,
        compressed: matches!(encoding, Some("gzip" | "deflate" | "zstd")),
        body_bytes: body.len(),
    });
    resp
}

fn error(status: u16, title: &str) -> (u16, usize, Response) {
    (status, 0, reply(status, title).response())
}

impl Dd {
    fn ingest(&self, headers: &HeaderMap, body: &[u8]) -> (u16, usize, Response) {
        match header(headers, "dd-api-key") {
            None => return error(401, "Unauthorized"),
            Some(k) if k != self.api_key => return error(403, "Forbidden"),
            Some(_) => {}
        }
        if let Some(s) = self.rec.next_scripted() {
            return (s.status, 0, s.response());
        }
        if !header(headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
            self.rec
                .violation("content-type is not application/json".into());
            return error(415, "Unsupported Media Type");
        }
        let body = match decode_body(header(headers, "content-encoding"), body) {
            Decoded::Body(b) => b,
            Decoded::Unsupported(_) => return error(415, "Unsupported Media Type"),
            Decoded::Corrupt(_) => return error(400, "Bad Request"),
        };
        if body.len() > self.max_payload {
            return error(413, "Payload Too Large");
        }
        let logs = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(logs)) => logs,
            Ok(obj @ Value::Object(_)) => vec![obj],
            _ => {
                self.rec
                    .violation("body is not a JSON array of logs".into());
                return error(400, "Bad Request");
            }
        };
        if logs.len() > MAX_ENTRIES {
            self.rec.violation(format!(
                "{} logs in one request (max {MAX_ENTRIES})",
                logs.len()
            ));
            return error(400, "Bad Request");
        }
        let n = logs.len();
        for log in &logs {
            self.check(log);
        }
        self.rec.accept(logs);
        (202, n, json(202, &json!({})))
    }

    /// What Datadog takes with a 202 but mangles or does not index.
    fn check(&self, log: &Value) {
        let Some(obj) = log.as_object() else {
            self.rec.violation("a log is not a JSON object".into());
            return;
        };
        let size = log.to_string().len();
        if size > MAX_LOG {
            self.rec
                .violation(format!("log of {size} bytes would be truncated to 1 MB"));
        }
        for key in ["message", "ddsource", "service", "ddtags"] {
            if !obj.get(key).is_some_and(Value::is_string) {
                self.rec.violation(format!("log has no string {key:?}"));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match obj.get("timestamp").and_then(Value::as_i64) {
            Some(ts) if ts > now - 18 * 3_600_000 && ts < now + 2 * 3_600_000 => {}
            Some(ts) => self
                .rec
                .violation(format!("timestamp {ts} is outside what Datadog indexes")),
            None => self
                .rec
                .violation("log has no integer epoch-ms timestamp".into()),
        }
    }
}
