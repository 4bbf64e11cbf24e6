//! Stand-ins for Amazon Kinesis Data Firehose.
//!
//! [`FakeFirehose`] speaks PutRecordBatch's JSON 1.1 wire format and enforces what moto does
//! not: 500 records, 1,024,000 bytes per record and 4 MiB per call; partial failures
//! (`FailedPutCount`) and whole-call errors can be scripted. [`Moto`] runs the moto server
//! (installed by `make test` into `.venv`) for the end-to-end path into S3.

use crate::fake::{Recorder, Scripted, Seen, Server, header, serve};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MAX_RECORDS: usize = 500;
pub const MAX_RECORD: usize = 1_024_000;
pub const MAX_CALL: usize = 4 * 1024 * 1024;

/// A whole-call error answer, as the service sends it.
pub fn error(status: u16, code: &str, message: &str) -> Scripted {
    Scripted {
        status,
        body: json!({"__type": code, "message": message}),
        retry_after: None,
    }
}

struct Fh {
    stream: String,
    access_key: String,
    /// Per upcoming request: positions of records that fail with ServiceUnavailableException.
    record_failures: Mutex<VecDeque<Vec<usize>>>,
    /// DescribeDeliveryStream answers 403 with a proxy's HTML page, as when a policy or a
    /// gateway allows PutRecordBatch but not Describe.
    deny_describe: std::sync::atomic::AtomicBool,
    /// DescribeDeliveryStream calls answered with that page.
    describes_denied: std::sync::atomic::AtomicU64,
    rec: Recorder,
}

/// A marker inside the HTML page of a denied DescribeDeliveryStream: it must never reach a
/// log line or a status.
pub const DENIED_PAGE_MARKER: &str = "request-id-of-the-proxy-page";

pub struct FakeFirehose {
    server: Server,
    state: Arc<Fh>,
}

crate::stand_in_fake!(FakeFirehose);

impl FakeFirehose {
    /// Serves delivery stream `stream` to requests signed with `access_key`.
    pub async fn start(
        stream: &str,
        access_key: &str,
        retain: bool,
    ) -> std::io::Result<FakeFirehose> {
        let state = Fh::new(stream, access_key, retain);
        Ok(FakeFirehose {
            server: serve(Router::new().fallback(handle), state.clone()).await?,
            state,
        })
    }

    /// As [`FakeFirehose::start`], serving HTTPS with `config`.
    #[cfg(feature = "tls")]
    pub async fn start_tls(
        stream: &str,
        access_key: &str,
        config: Arc<crate::tls::TlsServerConfig>,
    ) -> std::io::Result<FakeFirehose> {
        let state = Fh::new(stream, access_key, true);
        let router = Router::new().fallback(handle);
        Ok(FakeFirehose {
            server: crate::fake::serve_tls(router, state.clone(), config).await?,
            state,
        })
    }

    /// Connections refused during the TLS handshake.
    pub fn tls_refused(&self) -> u64 {
        self.server.tls_refused()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn rec(&self) -> &Recorder {
        &self.state.rec
    }

    crate::recorder_accessors!();

    /// From now on DescribeDeliveryStream (the health check) answers 403 with a 3 KB HTML
    /// page, while PutRecordBatch still works.
    pub fn deny_describe(&self) {
        self.state
            .deny_describe
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many DescribeDeliveryStream calls were denied so far.
    pub fn describes_denied(&self) -> u64 {
        self.state
            .describes_denied
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The next requests fail the records at these positions (one list per request).
    pub fn fail_records(&self, per_request: impl IntoIterator<Item = Vec<usize>>) {
        self.state
            .record_failures
            .lock()
            .unwrap()
            .extend(per_request);
    }
}

/// DescribeDeliveryStream's answer for an active Direct PUT stream: what the connector's
/// readiness check reads (shared with the benchmark's stand-in).
pub fn describe_answer(stream: &str) -> Value {
    json!({"DeliveryStreamDescription": {
        "DeliveryStreamName": stream,
        "DeliveryStreamARN": format!("arn:aws:firehose:us-east-1:123456789012:deliverystream/{stream}"),
        "DeliveryStreamStatus": "ACTIVE",
        "DeliveryStreamType": "DirectPut",
        "VersionId": "1",
        "Destinations": [],
        "HasMoreDestinations": false
    }})
}

fn amz_json(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(fh): State<Arc<Fh>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, items, resp) = fh.call(&headers, &body);
    // Only deliveries are recorded; DescribeDeliveryStream is the readiness check.
    if header(&headers, "x-amz-target") == Some("Firehose_20150804.PutRecordBatch") {
        fh.rec.saw(Seen {
            status,
            code: 0,
            items,
            compressed: false,
            body_bytes: body.len(),
        });
    }
    resp
}

fn fail(status: u16, code: &str, message: &str) -> (u16, usize, Response) {
    (
        status,
        0,
        amz_json(status, &json!({"__type": code, "message": message})),
    )
}

impl Fh {
    fn new(stream: &str, access_key: &str, retain: bool) -> Arc<Fh> {
        Arc::new(Fh {
            stream: stream.into(),
            access_key: access_key.into(),
            record_failures: Mutex::default(),
            deny_describe: Default::default(),
            describes_denied: Default::default(),
            rec: Recorder::new(retain, Duration::ZERO),
        })
    }

    fn call(&self, headers: &HeaderMap, body: &[u8]) -> (u16, usize, Response) {
        let signed = header(headers, "authorization").is_some_and(|a| {
            a.starts_with("AWS4-HMAC-SHA256")
                && a.contains(&format!("Credential={}/", self.access_key))
        });
        if !signed {
            return fail(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
        if header(headers, "content-type") != Some("application/x-amz-json-1.1") {
            self.rec
                .violation("content-type is not application/x-amz-json-1.1".into());
        }
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return fail(400, "SerializationException", "body is not JSON");
        };
        if req["DeliveryStreamName"] != self.stream.as_str() {
            return fail(
                400,
                "ResourceNotFoundException",
                &format!(
                    "Firehose {} under account 123456789012 not found.",
                    req["DeliveryStreamName"]
                ),
            );
        }
        match header(headers, "x-amz-target") {
            Some("Firehose_20150804.DescribeDeliveryStream")
                if self.deny_describe.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                self.describes_denied
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let page = format!(
                    "<html>\n<head><title>403 Forbidden</title></head>\n<body>\n{}\n<p>{DENIED_PAGE_MARKER}</p>\n</body>\n</html>\n",
                    "<!-- padding a proxy adds -->\n".repeat(100)
                );
                let page = ([("content-type", "text/html")], page);
                return (403, 0, (StatusCode::FORBIDDEN, page).into_response());
            }
            Some("Firehose_20150804.DescribeDeliveryStream") => {
                return (200, 0, amz_json(200, &describe_answer(&self.stream)));
            }
            Some("Firehose_20150804.PutRecordBatch") => {}
            other => return fail(400, "UnknownOperationException", &format!("{other:?}")),
        }
        if let Some(s) = self.rec.next_scripted() {
            return (s.status, 0, amz_json(s.status, &s.body));
        }
        let mut data = Vec::new();
        for r in req["Records"].as_array().into_iter().flatten() {
            match r["Data"]
                .as_str()
                .map(|d| base64::engine::general_purpose::STANDARD.decode(d))
            {
                Some(Ok(bytes)) => data.push(bytes),
                _ => return fail(400, "SerializationException", "record Data is not base64"),
            }
        }
        let limit = |what: String| {
            self.rec.violation(what.clone());
            fail(400, "InvalidArgumentException", &what)
        };
        if data.is_empty() || data.len() > MAX_RECORDS {
            return limit(format!(
                "{} records in one call (1 to {MAX_RECORDS})",
                data.len()
            ));
        }
        if let Some(big) = data.iter().find(|d| d.len() > MAX_RECORD) {
            return limit(format!(
                "a record of {} bytes (max {MAX_RECORD})",
                big.len()
            ));
        }
        let total: usize = data.iter().map(Vec::len).sum();
        if total > MAX_CALL {
            return limit(format!("{total} bytes in one call (max {MAX_CALL})"));
        }
        let failing = self
            .record_failures
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_default();
        let n = data.len();
        let mut responses = Vec::with_capacity(n);
        let mut kept = Vec::with_capacity(n);
        for (i, d) in data.into_iter().enumerate() {
            if failing.contains(&i) {
                responses.push(json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}));
            } else {
                responses.push(json!({"RecordId": format!("record-{i}")}));
                kept.push(Value::String(String::from_utf8_lossy(&d).into_owned()));
            }
        }
        self.rec.accept(kept);
        let failed = n - responses
            .iter()
            .filter(|r| r.get("RecordId").is_some())
            .count();
        (
            200,
            n,
            amz_json(
                200,
                &json!({"FailedPutCount": failed, "Encrypted": false, "RequestResponses": responses}),
            ),
        )
    }
}

/// A moto server on a free 127.0.0.1 port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    python: PathBuf,
}

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin")
}

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/moto_s3.py")
}

impl Moto {
    /// Starts `moto_server` from the project's `.venv` (created by `make test`).
    pub fn start() -> Result<Moto, String> {
        let server = venv().join("moto_server");
        if !server.exists() {
            return Err(format!(
                "{} is missing: run `make test`, which installs moto into .venv",
                server.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting moto: {e}"))?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python: venv().join("python"),
        };
        // Readiness is a listening socket; moto takes under a second.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("moto did not start listening within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(moto)
    }

    fn helper(&self, cmd: &str, bucket: &str, stream: &str) -> Result<Vec<u8>, String> {
        let out = Command::new(&self.python)
            .arg(helper())
            .args([cmd, &self.endpoint, bucket, stream])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(out.stdout)
    }

    /// Creates `bucket` and a DirectPut delivery stream `stream` into it.
    pub fn create_stream(&self, bucket: &str, stream: &str) -> Result<(), String> {
        self.helper("setup", bucket, stream).map(|_| ())
    }

    /// Every S3 object's bytes in `bucket`, concatenated.
    pub fn s3_contents(&self, bucket: &str) -> Result<Vec<u8>, String> {
        self.helper("dump", bucket, "-")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
