//! A strict fake of New Relic's Event API (`POST /v1/accounts/{id}/events`). Like New Relic,
//! it answers 200 to any request that passes the synchronous checks (key, size, JSON) and
//! drops invalid events one by one; the drops are listed by [`FakeNewRelic::integration_errors`]
//! the way New Relic reports them as `NrIntegrationError` events.

use crate::fake::{Decoded, Recorder, Scripted, Seen, Server, decode_body, header, json, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MAX_PAYLOAD: usize = 1_000_000;
pub const MAX_ATTRIBUTES: usize = 254;
pub const MAX_NAME: usize = 255;
pub const MAX_VALUE: usize = 4096;

pub fn reply(status: u16) -> Scripted {
    Scripted {
        status,
        body: json!({"success": false}),
        retry_after: None,
    }
}

struct Nr {
    account_id: String,
    key: String,
    rec: Recorder,
    errors: Mutex<Vec<String>>,
}

pub struct FakeNewRelic {
    server: Server,
    state: Arc<Nr>,
}

crate::stand_in_fake!(FakeNewRelic);

impl FakeNewRelic {
    /// Accepts `key` as either `Api-Key` or `X-Insert-Key`.
    pub async fn start(account_id: &str, key: &str) -> std::io::Result<FakeNewRelic> {
        Self::start_with(account_id, key, true).await
    }

    pub async fn start_with(
        account_id: &str,
        key: &str,
        retain: bool,
    ) -> std::io::Result<FakeNewRelic> {
        let state = Arc::new(Nr {
            account_id: account_id.into(),
            key: key.into(),
            rec: Recorder::new(retain, Duration::ZERO),
            errors: Mutex::default(),
        });
        Ok(FakeNewRelic {
            server: serve(Router::new().fallback(handle), state.clone()).await?,
            state,
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn rec(&self) -> &Recorder {
        &self.state.rec
    }

    crate::recorder_accessors!();

    /// Events New Relic would have dropped after answering 200, with why.
    pub fn integration_errors(&self) -> Vec<String> {
        self.state.errors.lock().unwrap().clone()
    }
}

async fn handle(
    State(nr): State<Arc<Nr>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != format!("/v1/accounts/{}/events", nr.account_id) {
        return json(404, &json!({"error": "not found"}));
    }
    if method != Method::POST {
        return json(405, &json!({"error": "method not allowed"}));
    }
    let encoding = header(&headers, "content-encoding");
    let (status, items, resp) = nr.ingest(&headers, &body);
    nr.rec.saw(Seen {
        status,
        code: 0,
        items,
        compressed: matches!(encoding, Some("gzip" | "deflate")),
        body_bytes: body.len(),
    });
    resp
}

impl Nr {
    fn ingest(&self, headers: &HeaderMap, body: &[u8]) -> (u16, usize, Response) {
        let refuse = |status: u16| (status, 0, reply(status).response());
        let key = header(headers, "api-key").or_else(|| header(headers, "x-insert-key"));
        if key != Some(self.key.as_str()) {
            return refuse(403);
        }
        if let Some(s) = self.rec.next_scripted() {
            return (s.status, 0, s.response());
        }
        if body.is_empty() {
            return refuse(400);
        }
        if body.len() > MAX_PAYLOAD {
            return refuse(413);
        }
        let encoding = header(headers, "content-encoding");
        if encoding.is_none() {
            self.rec
                .violation("body not compressed (New Relic says always compress)".into());
        }
        // The Event API takes gzip and deflate, not zstd.
        if encoding == Some("zstd") {
            return refuse(415);
        }
        let body = match decode_body(encoding, body) {
            Decoded::Body(b) => b,
            Decoded::Unsupported(_) => return refuse(415),
            Decoded::Corrupt(_) => return refuse(400),
        };
        let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
            self.rec.violation("body is not a JSON array".into());
            return refuse(400);
        };
        let n = events.len();
        let mut kept = Vec::with_capacity(n);
        for e in events {
            match validate(&e) {
                Ok(()) => kept.push(e),
                Err(why) => self.errors.lock().unwrap().push(why),
            }
        }
        self.rec.accept(kept);
        (
            200,
            n,
            json(
                200,
                &json!({"success": true, "uuid": "00000000-0000-4000-8000-000000000000"}),
            ),
        )
    }
}

/// The Event API's rules for one event; `Err` is what `NrIntegrationError` would say.
fn validate(e: &Value) -> Result<(), String> {
    let Some(obj) = e.as_object() else {
        return Err("event is not an object".into());
    };
    match obj.get("eventType").and_then(Value::as_str) {
        None => return Err("missing eventType".into()),
        Some(t)
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') =>
        {
            return Err(format!("invalid eventType {t:?}"));
        }
        Some(_) => {}
    }
    if obj.len() > MAX_ATTRIBUTES {
        return Err(format!("{} attributes (max {MAX_ATTRIBUTES})", obj.len()));
    }
    check_attributes(obj)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    match obj.get("timestamp") {
        None => Ok(()),
        Some(Value::Number(n)) if n.is_i64() => {
            let ts = n.as_i64().unwrap_or(0);
            let ms = if ts < 10_000_000_000 { ts * 1000 } else { ts };
            if (ms - now).abs() > 24 * 3_600_000 {
                Err(format!("timestamp {ts} is not within 24 h of now"))
            } else {
                Ok(())
            }
        }
        Some(other) => Err(format!("timestamp {other} is not an integer")),
    }
}

fn check_attributes(obj: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in obj {
        if k.chars().count() > MAX_NAME {
            return Err(format!(
                "attribute name of {} characters",
                k.chars().count()
            ));
        }
        match v {
            Value::String(s) if s.chars().count() > MAX_VALUE => {
                return Err(format!("attribute {k} value exceeded maximum length"));
            }
            Value::String(_) | Value::Number(_) => {}
            Value::Bool(_) => {
                return Err(format!("attribute {k} is a boolean (not a supported type)"));
            }
            Value::Null => return Err(format!("attribute {k} is null")),
            Value::Array(_) | Value::Object(_) => return Err(format!("attribute {k} is not flat")),
        }
    }
    Ok(())
}
