//! What every fake destination shares: a loopback listener on a free port, gzip/deflate
//! decoding, scripted failures, a record of requests and accepted items, protocol violations,
//! and waiting on that record without sleeping.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::read::{GzDecoder, ZlibDecoder};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// A running fake server. Stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    scheme: &'static str,
    /// Connections whose TLS handshake failed.
    refused: std::sync::Arc<AtomicU64>,
}

impl Server {
    /// Serves `app` on 127.0.0.1 at a port the OS picks.
    pub async fn start(app: Router) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self::run(listener, app, addr, "http", Default::default()))
    }

    /// Serves `app` over TLS with `config` (see [`crate::tls::Pki::server_config`]).
    #[cfg(feature = "tls")]
    pub async fn start_tls(
        app: Router,
        config: std::sync::Arc<crate::tls::TlsServerConfig>,
    ) -> std::io::Result<Server> {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let refused = std::sync::Arc::new(AtomicU64::new(0));
        let listener = crate::tls::TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            refused: refused.clone(),
        };
        Ok(Self::run(listener, app, addr, "https", refused))
    }

    fn run<L>(
        listener: L,
        app: Router,
        addr: SocketAddr,
        scheme: &'static str,
        refused: std::sync::Arc<AtomicU64>,
    ) -> Server
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Server {
            addr,
            stop: Some(stop),
            scheme,
            refused,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Connections refused during the TLS handshake (always 0 without TLS).
    pub fn tls_refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `router` with `state`, with no body-size limit (the fakes enforce the API's own).
pub async fn serve<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    state: S,
) -> std::io::Result<Server> {
    Server::start(unlimited(router, state)).await
}

/// As [`serve`], over TLS.
#[cfg(feature = "tls")]
pub async fn serve_tls<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    state: S,
    config: std::sync::Arc<crate::tls::TlsServerConfig>,
) -> std::io::Result<Server> {
    Server::start_tls(unlimited(router, state), config).await
}

fn unlimited<S: Clone + Send + Sync + 'static>(router: Router<S>, state: S) -> Router {
    router
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// A request body decoded by its `Content-Encoding`, or why it could not be.
pub enum Decoded {
    Body(Vec<u8>),
    Unsupported(String),
    Corrupt(String),
}

/// A body decoded by its `Content-Encoding`: identity, gzip, deflate or zstd. A fake whose
/// API takes fewer refuses the others before it calls this (HEC and New Relic: zstd).
pub fn decode_body(encoding: Option<&str>, body: &[u8]) -> Decoded {
    let mut out = Vec::new();
    let result = match encoding {
        None | Some("identity") => return Decoded::Body(body.to_vec()),
        Some("gzip") => GzDecoder::new(body).read_to_end(&mut out),
        Some("deflate") => ZlibDecoder::new(body).read_to_end(&mut out),
        Some("zstd") => {
            zstd::stream::read::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut out))
        }
        Some(other) => return Decoded::Unsupported(other.to_string()),
    };
    match result {
        Ok(_) => Decoded::Body(out),
        Err(e) => Decoded::Corrupt(e.to_string()),
    }
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A JSON answer.
pub fn json(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A scripted answer for one upcoming request (nothing of that request is accepted).
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Scripted {
    pub fn response(&self) -> Response {
        let mut r = json(self.status, &self.body);
        if let Some(s) = self.retry_after {
            r.headers_mut().insert("retry-after", s.into());
        }
        r
    }
}

/// What a fake saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub status: u16,
    /// The destination's own code, where it has one (HEC); else 0.
    pub code: i64,
    /// Items parsed from the body (0 if it was refused before parsing).
    pub items: usize,
    pub compressed: bool,
    pub body_bytes: usize,
}

/// The state every fake keeps.
pub struct Recorder {
    pub delay: Duration,
    /// Chance (per mille) that a request fails with the fake's retryable error.
    failure_per_mille: AtomicU64,
    retain: bool,
    script: Mutex<VecDeque<Scripted>>,
    items: Mutex<Vec<Value>>,
    count: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    violations: Mutex<Vec<String>>,
    notify: Notify,
}

impl Recorder {
    pub fn new(retain: bool, delay: Duration) -> Self {
        Recorder {
            delay,
            failure_per_mille: AtomicU64::new(0),
            retain,
            script: Mutex::default(),
            items: Mutex::default(),
            count: AtomicU64::new(0),
            seen: Mutex::default(),
            violations: Mutex::default(),
            notify: Notify::new(),
        }
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.script.lock().unwrap().extend(answers);
    }

    pub fn clear_script(&self) {
        self.script.lock().unwrap().clear();
    }

    /// The next scripted answer, or a random failure when a failure rate is set.
    pub fn next_scripted(&self) -> Option<Scripted> {
        if let Some(s) = self.script.lock().unwrap().pop_front() {
            return Some(s);
        }
        let rate = self.failure_per_mille.load(Relaxed);
        (rate > 0 && fastrand::u64(0..1000) < rate).then(|| Scripted {
            status: 503,
            body: serde_json::json!({"text": "Server is busy", "code": 9, "errors": ["Service Unavailable"]}),
            retry_after: None,
        })
    }

    /// Makes about `per_mille`/1000 of requests fail with 503 (retryable for every API).
    pub fn fail_randomly(&self, per_mille: u64) {
        self.failure_per_mille.store(per_mille, Relaxed);
    }

    /// Every request fails: the destination is down (its health endpoint too).
    pub fn is_down(&self) -> bool {
        self.failure_per_mille.load(Relaxed) >= 1000
    }

    /// Stores items the destination accepted.
    pub fn accept(&self, items: Vec<Value>) {
        let n = items.len() as u64;
        if self.retain {
            self.items.lock().unwrap().extend(items);
        }
        self.count.fetch_add(n, Relaxed);
    }

    /// Records one finished request and wakes waiters.
    pub fn saw(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
        self.notify.notify_waiters();
    }

    pub fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }

    pub fn items(&self) -> Vec<Value> {
        self.items.lock().unwrap().clone()
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Waits until at least `n` items are accepted.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.count() >= n).await
    }

    /// Waits until `check` holds over the requests seen so far.
    pub async fn wait_for_seen(&self, timeout: Duration, check: impl Fn(&[Seen]) -> bool) -> bool {
        self.wait_until(timeout, || check(&self.seen.lock().unwrap()))
            .await
    }

    /// Waits until `check` holds, re-checking after every request. False on timeout.
    async fn wait_until(&self, timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if check() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check();
            }
        }
    }

    /// Sleeps for the configured answer delay (a slow destination).
    pub async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

/// Accessors every fake offers, delegating to its [`Recorder`].
#[macro_export]
macro_rules! recorder_accessors {
    () => {
        /// The next requests get these answers, in order, before normal service resumes.
        pub fn script(&self, answers: impl IntoIterator<Item = $crate::fake::Scripted>) {
            self.rec().script(answers);
        }
        /// About `per_mille`/1000 of requests fail with a retryable 503.
        pub fn fail_randomly(&self, per_mille: u64) {
            self.rec().fail_randomly(per_mille);
        }
        /// Drops the scripted answers not yet used: normal service resumes.
        pub fn clear_script(&self) {
            self.rec().clear_script();
        }
        /// Every accepted item, in order.
        pub fn received(&self) -> Vec<serde_json::Value> {
            self.rec().items()
        }
        pub fn received_count(&self) -> u64 {
            self.rec().count()
        }
        pub fn seen(&self) -> Vec<$crate::fake::Seen> {
            self.rec().seen()
        }
        /// Protocol mistakes the client made.
        pub fn violations(&self) -> Vec<String> {
            self.rec().violations()
        }
        pub async fn wait_for_received(&self, n: u64, timeout: std::time::Duration) -> bool {
            self.rec().wait_for_count(n, timeout).await
        }
        pub async fn wait_for_seen(
            &self,
            timeout: std::time::Duration,
            check: impl Fn(&[$crate::fake::Seen]) -> bool,
        ) -> bool {
            self.rec().wait_for_seen(timeout, check).await
        }
    };
}

/// A running fake as the demo drives it: where it listens, how many items it accepted, and
/// a switch that takes it down (503 to every delivery) and up again.
pub trait StandInFake: Send + Sync + 'static {
    fn base_url(&self) -> String;
    fn accepted(&self) -> u64;
    fn set_down(&self, down: bool);
}

/// Makes `$fake` a [`StandInFake`] through the accessors every fake has.
#[macro_export]
macro_rules! stand_in_fake {
    ($fake:ty) => {
        impl $crate::fake::StandInFake for $fake {
            fn base_url(&self) -> String {
                self.url()
            }
            fn accepted(&self) -> u64 {
                self.received_count()
            }
            fn set_down(&self, down: bool) {
                self.fail_randomly(if down { 1000 } else { 0 });
            }
        }
    };
}

/// `fake`'s URL, and closures over it (which keep it running) that count what it accepted
/// and take it down or up: the parts of a destination's stand-in.
pub fn stand_in_parts(
    fake: impl StandInFake,
) -> (
    String,
    impl Fn() -> u64 + Send + Sync + 'static,
    impl Fn(bool) + Send + Sync + 'static,
) {
    let fake = std::sync::Arc::new(fake);
    let switch = fake.clone();
    (
        fake.base_url(),
        move || fake.accepted(),
        move |down| switch.set_down(down),
    )
}

/// A TCP proxy to `upstream` that resets the first `resets` connections it accepts (closes
/// them with no answer), then forwards faithfully. Stops when dropped.
pub struct ResetProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ResetProxy {
    pub async fn start(upstream: SocketAddr, resets: u64) -> std::io::Result<ResetProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let left = std::sync::Arc::new(AtomicU64::new(resets));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if left
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // Zero linger: the client sees a reset, not an answer.
                    let _ = inbound.set_zero_linger();
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(ResetProxy { addr, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ResetProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn zstd_bodies_decode() {
        let body = br#"[{"message":"hi"}]"#;
        let packed = zstd::stream::encode_all(&body[..], 9).unwrap();
        assert!(matches!(
            decode_body(Some("zstd"), &packed),
            Decoded::Body(b) if b == body
        ));
        assert!(matches!(
            decode_body(Some("zstd"), b"not zstd"),
            Decoded::Corrupt(_)
        ));
        assert!(matches!(
            decode_body(Some("br"), b""),
            Decoded::Unsupported(e) if e == "br"
        ));
    }
}
