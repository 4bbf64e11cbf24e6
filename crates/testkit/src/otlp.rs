//! A strict fake of an OTLP/HTTP logs receiver (`POST /v1/logs`, binary protobuf), decoding
//! with the same generated `opentelemetry-proto` types as the connector.
//!
//! Enforced, as the OTLP specification and the Collector's receiver do: the path and method,
//! `Content-Type: application/x-protobuf` (415 otherwise), `Content-Encoding` gzip or
//! identity, a body limit (413; the Collector's default is 20 MiB), a body that decodes as an
//! `ExportLogsServiceRequest` (400). Beyond the protocol, to catch a wrong encoder: a required
//! API-key header (401 without it, 403 when wrong), and every record must carry a
//! `time_unix_nano` that matches its event's `event.timestamp` and a string body that is a
//! JSON object (400, recorded as a violation).
//!
//! Answers are real protobuf: `ExportLogsServiceResponse` on 200 (with `partial_success` when
//! scripted), `google.rpc.Status` (tonic-types' generated type) on failures.

use crate::fake::{Decoded, Recorder, Scripted, Seen, Server, decode_body, header, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PATH: &str = "/v1/logs";
/// The OpenTelemetry Collector's default `max_request_body_size`.
pub const MAX_BODY: usize = 20 * 1024 * 1024;
/// The header [`FakeOtlp::start`] requires, as several OTLP vendors name theirs.
pub const API_KEY_HEADER: &str = "x-api-key";
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// One accepted log record, decoded for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The record's body, parsed: the QoE event.
    pub event: Value,
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    /// The record's string attributes.
    pub attributes: BTreeMap<String, String>,
    /// The string attributes of the resource it came under.
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
}

/// A scripted OTLP answer for one upcoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtlpAnswer {
    /// A failure: `google.rpc.Status` with `message`, and `Retry-After` in seconds if set.
    /// Nothing of the request is accepted.
    Fail {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// 200 with `partial_success`: the last `rejected` records are refused, the rest accepted.
    Partial { rejected: i64, message: String },
}

impl OtlpAnswer {
    pub fn fail(status: u16, message: &str, retry_after: Option<u64>) -> OtlpAnswer {
        OtlpAnswer::Fail {
            status,
            message: message.into(),
            retry_after,
        }
    }

    pub fn partial(rejected: i64, message: &str) -> OtlpAnswer {
        OtlpAnswer::Partial {
            rejected,
            message: message.into(),
        }
    }
}

struct Otlp {
    api_key: String,
    max_body: usize,
    retain: bool,
    answers: Mutex<VecDeque<OtlpAnswer>>,
    records: Mutex<Vec<Received>>,
    rec: Recorder,
}

pub struct FakeOtlp {
    server: Server,
    state: Arc<Otlp>,
}

crate::stand_in_fake!(FakeOtlp);

impl FakeOtlp {
    /// A receiver requiring `x-api-key: <api_key>`, with the Collector's body limit.
    pub async fn start(api_key: &str) -> std::io::Result<FakeOtlp> {
        Self::start_with(api_key, MAX_BODY, true).await
    }

    /// `max_body`: uncompressed bytes over which requests get 413; `retain`: keep records
    /// (false for load runs and the demo: only counts are kept).
    pub async fn start_with(
        api_key: &str,
        max_body: usize,
        retain: bool,
    ) -> std::io::Result<FakeOtlp> {
        let state = Arc::new(Otlp {
            api_key: api_key.into(),
            max_body,
            retain,
            answers: Mutex::default(),
            records: Mutex::default(),
            rec: Recorder::new(retain, Duration::ZERO),
        });
        Ok(FakeOtlp {
            server: serve(Router::new().fallback(handle), state.clone()).await?,
            state,
        })
    }

    /// The base URL; the logs endpoint is [`Self::logs_url`].
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The full logs URL, to configure as `endpoint`.
    pub fn logs_url(&self) -> String {
        format!("{}{PATH}", self.server.url())
    }

    /// The next requests get these OTLP answers, in order, before any [`Self::script`]ed
    /// one and before normal service resumes.
    pub fn script_otlp(&self, answers: impl IntoIterator<Item = OtlpAnswer>) {
        self.state.answers.lock().unwrap().extend(answers);
    }

    /// Every accepted record with its attributes and resource, in order.
    pub fn records(&self) -> Vec<Received> {
        self.state.records.lock().unwrap().clone()
    }

    fn rec(&self) -> &Recorder {
        &self.state.rec
    }

    crate::recorder_accessors!();
}

async fn handle(
    State(otlp): State<Arc<Otlp>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != PATH {
        return failure(404, "unknown path: OTLP logs are posted to /v1/logs", None);
    }
    if method != Method::POST {
        return failure(405, "OTLP requests are POSTs", None);
    }
    let encoding = header(&headers, "content-encoding");
    let (status, items, resp) = otlp.ingest(&headers, &body);
    otlp.rec.saw(Seen {
        status,
        code: 0,
        items,
        compressed: encoding == Some("gzip"),
        body_bytes: body.len(),
    });
    resp
}

/// A failure answer: HTTP `status` with a `google.rpc.Status` body.
pub fn failure(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let body = tonic_types::pb::Status {
        code: grpc_code(status),
        message: message.into(),
        details: vec![],
    }
    .encode_to_vec();
    let mut r = protobuf(status, body);
    if let Some(s) = retry_after {
        r.headers_mut().insert("retry-after", s.into());
    }
    r
}

fn protobuf(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", CONTENT_TYPE)], body).into_response()
}

/// The gRPC code the Collector pairs with each HTTP status (the spec lets clients ignore it).
fn grpc_code(status: u16) -> i32 {
    match status {
        400 | 415 => 3,  // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 | 405 => 12, // UNIMPLEMENTED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        502..=504 => 14, // UNAVAILABLE
        _ => 2,          // UNKNOWN
    }
}

fn error(status: u16, message: &str) -> (u16, usize, Response) {
    (status, 0, failure(status, message, None))
}

/// A scripted answer of the shared kind (from `script` or `fail_randomly`), as OTLP words it.
fn shared(s: &Scripted) -> (u16, usize, Response) {
    let message = s.body["text"]
        .as_str()
        .map_or_else(|| s.body.to_string(), str::to_string);
    (s.status, 0, failure(s.status, &message, s.retry_after))
}

impl Otlp {
    fn ingest(&self, headers: &HeaderMap, body: &[u8]) -> (u16, usize, Response) {
        match header(headers, API_KEY_HEADER) {
            None => return error(401, "missing x-api-key"),
            Some(k) if k != self.api_key => return error(403, "invalid x-api-key"),
            Some(_) => {}
        }
        let scripted = self.answers.lock().unwrap().pop_front();
        let partial = match scripted {
            Some(OtlpAnswer::Fail {
                status,
                message,
                retry_after,
            }) => return (status, 0, failure(status, &message, retry_after)),
            Some(OtlpAnswer::Partial { rejected, message }) => Some((rejected, message)),
            None => {
                if let Some(s) = self.rec.next_scripted() {
                    return shared(&s);
                }
                None
            }
        };
        let content_type = header(headers, "content-type").unwrap_or("");
        if content_type.split(';').next().map(str::trim) != Some(CONTENT_TYPE) {
            self.rec.violation(format!(
                "content-type {content_type:?} is not {CONTENT_TYPE}"
            ));
            return error(415, "unsupported content type");
        }
        let body = match header(headers, "content-encoding") {
            None | Some("gzip" | "identity") => {
                match decode_body(header(headers, "content-encoding"), body) {
                    Decoded::Body(b) => b,
                    Decoded::Unsupported(e) | Decoded::Corrupt(e) => {
                        return error(400, &format!("cannot decompress the body: {e}"));
                    }
                }
            }
            Some(other) => {
                self.rec
                    .violation(format!("content-encoding {other:?} is not gzip"));
                return error(415, &format!("unsupported content encoding {other:?}"));
            }
        };
        if body.len() > self.max_body {
            return error(413, "request body too large");
        }
        let request = match ExportLogsServiceRequest::decode(&body[..]) {
            Ok(r) => r,
            Err(e) => {
                self.rec
                    .violation(format!("body is not an ExportLogsServiceRequest: {e}"));
                return error(400, &format!("cannot decode the request: {e}"));
            }
        };
        let mut records = match self.check(request) {
            Ok(r) => r,
            Err(why) => {
                self.rec.violation(why.clone());
                return error(400, &why);
            }
        };
        let answer = match partial {
            Some((rejected, error_message)) => {
                let keep = records.len().saturating_sub(rejected.max(0) as usize);
                records.truncate(keep);
                ExportLogsServiceResponse {
                    partial_success: Some(ExportLogsPartialSuccess {
                        rejected_log_records: rejected,
                        error_message,
                    }),
                }
            }
            None => ExportLogsServiceResponse::default(),
        };
        let n = records.len();
        if self.retain {
            self.rec
                .accept(records.iter().map(|r| r.event.clone()).collect());
            self.records.lock().unwrap().extend(records);
        } else {
            // Counted only: no copies of the events are kept.
            self.rec.accept(vec![Value::Null; n]);
        }
        (200, n, protobuf(200, answer.encode_to_vec()))
    }

    /// The records of a decoded request, or why an OTLP log record from switchyard is wrong.
    fn check(&self, request: ExportLogsServiceRequest) -> Result<Vec<Received>, String> {
        let mut out = Vec::new();
        for rl in request.resource_logs {
            let resource = rl
                .resource
                .map(|r| strings(&r.attributes))
                .unwrap_or_default();
            if !resource.contains_key("service.name") {
                self.rec
                    .violation("resource has no string service.name".into());
            }
            for sl in rl.scope_logs {
                let scope = sl.scope.map(|s| s.name).unwrap_or_default();
                for r in sl.log_records {
                    let Some(any_value::Value::StringValue(text)) = r.body.and_then(|b| b.value)
                    else {
                        return Err("a log record's body is not a string".into());
                    };
                    let event: Value = match serde_json::from_str(&text) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => return Err("a log record's body is not a JSON object".into()),
                    };
                    if r.time_unix_nano == 0 {
                        return Err("a log record has no time_unix_nano".into());
                    }
                    // event.timestamp is epoch ms (maybe fractional); the encoder keeps µs.
                    let expected = event["event"]["timestamp"]
                        .as_f64()
                        .map(|ms| (ms * 1000.0).round() as u64 * 1000);
                    if expected != Some(r.time_unix_nano) {
                        return Err(format!(
                            "time_unix_nano {} is not the event's timestamp ({expected:?})",
                            r.time_unix_nano
                        ));
                    }
                    out.push(Received {
                        event,
                        time_unix_nano: r.time_unix_nano,
                        observed_time_unix_nano: r.observed_time_unix_nano,
                        attributes: strings(&r.attributes),
                        resource: resource.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The string-valued attributes of a list.
fn strings(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some((kv.key.clone(), s.clone())),
            _ => None,
        })
        .collect()
}
