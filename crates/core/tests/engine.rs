//! The delivery engine with an in-memory connector whose answers are scripted: batching,
//! partial outcomes, retries, splitting, timeouts and the concurrency bound, in virtual time.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::*;

#[derive(Clone)]
enum ScriptedAnswer {
    Verdict(Verdict),
    Fail(SendError),
    /// Never answers: the engine's request timeout must fire.
    Hang,
}

fn ok() -> ScriptedAnswer {
    ScriptedAnswer::Verdict(Verdict::new(200, Outcome::Delivered))
}

#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<ScriptedAnswer>>,
    /// The offsets of each request, in send order.
    requests: Mutex<Vec<Vec<i64>>>,
    send_delay: Duration,
    refuse: Mutex<Vec<i64>>,
    /// Requests of more events than this fail to encode as too large.
    max_request: Option<usize>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// While set, every request is answered 503 (retryable).
    down: std::sync::atomic::AtomicBool,
    /// What the health check answers (None: healthy), and how often it was asked.
    health_error: Option<String>,
    health_checks: AtomicUsize,
    /// The health check never answers.
    health_hangs: bool,
    /// Each request's first event, as the shipment writes it.
    shipped: Mutex<Vec<serde_json::Value>>,
}

/// The engine owns its connector; the test keeps a second handle on the script.
struct Mem(Arc<Scripted>);

impl Connector for Mem {
    type Request = Vec<i64>;
    type Response = Verdict;

    fn hard_limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: 10_000,
            max_bytes: 1 << 30,
            max_linger: Duration::from_secs(60),
        }
    }
    fn encoded_len(&self, event: &Event) -> usize {
        event.raw().len()
    }
    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<Vec<i64>>, EncodeError> {
        // Events whose offset is in `refuse` are left out, as a validating encoder would.
        let refuse = self.0.refuse.lock().unwrap();
        let mut encoded = Encoded::all(Vec::new());
        if let Some(first) = shipment.events().first() {
            let mut json = Vec::new();
            shipment.write_event(first, &mut json);
            assert_eq!(json.len(), shipment.event_json_len(first));
            let json = serde_json::from_slice(&json).unwrap();
            self.0.shipped.lock().unwrap().push(json);
        }
        for (i, e) in shipment.events().iter().enumerate() {
            let o = e.origin().offset;
            if refuse.contains(&o) {
                encoded
                    .rejected
                    .push((i, format!("invalid: offset {o} refused")));
            } else {
                encoded.request.push(o);
                encoded
                    .fixes
                    .push(Fix::new(i, "touched").with_detail(format!("touched offset {o}")));
            }
        }
        if encoded.request.len() > self.0.max_request.unwrap_or(usize::MAX) {
            return Err(EncodeError::TooLarge {
                size: encoded.request.len(),
                limit: 0,
            });
        }
        Ok(encoded)
    }
    fn request_size(&self, request: &Vec<i64>) -> usize {
        request.len()
    }
    async fn send(&self, request: &Vec<i64>) -> Result<Verdict, SendError> {
        let s = &self.0;
        s.requests.lock().unwrap().push(request.clone());
        let now = s.in_flight.fetch_add(1, SeqCst) + 1;
        s.max_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(s.send_delay).await;
        s.in_flight.fetch_sub(1, SeqCst);
        if s.down.load(SeqCst) {
            return Ok(Verdict::new(
                503,
                Outcome::Retry {
                    reason: "503 down".into(),
                },
            ));
        }
        let answer = s.answers.lock().unwrap().pop_front().unwrap_or_else(ok);
        match answer {
            ScriptedAnswer::Verdict(v) => Ok(v),
            ScriptedAnswer::Fail(e) => Err(e),
            ScriptedAnswer::Hang => std::future::pending().await,
        }
    }
    fn classify(&self, response: &Verdict, _events: &[Event]) -> Verdict {
        response.clone()
    }
    async fn health(&self) -> Result<(), String> {
        self.0.health_checks.fetch_add(1, SeqCst);
        if self.0.health_hangs {
            std::future::pending::<()>().await;
        }
        self.0.health_error.clone().map_or(Ok(()), Err)
    }
}

const P: PartitionId = PartitionId(1);
const C: ConnectorIndex = ConnectorIndex(0);

struct Rig {
    connector: Arc<Scripted>,
    acker: Arc<Acker>,
    timings: Arc<TimingRecorder>,
    handle: ConnectorHandle,
}

fn settings(max_events: usize, linger_ms: u64) -> EngineSettings {
    EngineSettings {
        limits: BatchLimits {
            max_events,
            max_bytes: 1 << 20,
            max_linger: Duration::from_millis(linger_ms),
        },
        retry: RetryPolicy {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(600),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            on_exhausted: OnExhausted::DeadLetter,
        },
        concurrency: 2,
        request_timeout: Duration::from_secs(5),
        append_observability: false,
        health_check: HealthCheck::default(),
        rate_limit: None,
        fields: None,
    }
}

/// A worker for `connector`, wired as [`wiring`] says.
fn spawn(connector: &Arc<Scripted>, settings: EngineSettings, wiring: Wiring) -> ConnectorHandle {
    Engine::spawn(Mem(connector.clone()), "mem", C, settings, wiring)
}

/// Plain wiring on `acker`: ten timings kept, no dead letters, no isolation.
fn wiring(acker: &Arc<Acker>) -> Wiring {
    Wiring {
        acker: acker.clone(),
        timings: TimingRecorder::new(10),
        dead_letters: None,
        isolation: None,
        stats: None,
    }
}

fn rig(answers: Vec<ScriptedAnswer>, settings: EngineSettings, send_delay: Duration) -> Rig {
    let connector = Arc::new(Scripted {
        answers: Mutex::new(answers.into()),
        send_delay,
        ..Default::default()
    });
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let timings = TimingRecorder::new(100);
    let handle = spawn(
        &connector,
        settings,
        Wiring {
            timings: timings.clone(),
            ..wiring(&acker)
        },
    );
    Rig {
        connector,
        acker,
        timings,
        handle,
    }
}

fn event(offset: i64, pad: usize) -> Event {
    let origin = Origin {
        partition: P,
        topic: "qoe".into(),
        kafka_partition: 0,
        offset,
        member: None,
    };
    let raw = format!(
        r#"{{"event":{{"timestamp":{offset}}},"event_id":"e-{offset}","pad":"{}"}}"#,
        "x".repeat(pad)
    );
    Event::parse(Bytes::from(raw), origin, 1 << 20).unwrap()
}

impl Rig {
    fn feed(&self, offsets: std::ops::Range<i64>) {
        for o in offsets {
            let mut t = TargetSet::default();
            t.insert(C);
            self.acker.lock().register(P, o, t).unwrap();
            assert!(self.handle.send(event(o, 10)));
        }
    }

    /// Closes the queue and waits for every delivery to settle.
    async fn finish(
        self,
    ) -> (
        Arc<Scripted>,
        Arc<Acker>,
        Arc<TimingRecorder>,
        stats::ConnectorSnapshot,
    ) {
        let stats = self.handle.stats.clone();
        self.handle.close().await.unwrap();
        (self.connector, self.acker, self.timings, stats.snapshot())
    }
}

#[tokio::test(start_paused = true)]
async fn linger_closes_a_partial_batch() {
    let r = rig(vec![], settings(10, 50), Duration::ZERO);
    r.feed(0..3);
    let connector = r.connector.clone();
    // Virtual time: the linger timer fires without the queue closing.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(*connector.requests.lock().unwrap(), [vec![0, 1, 2]]);
    let (_, acker, _, stats) = r.finish().await;
    assert_eq!(acker.lock().watermark(P), Some(3));
    assert_eq!(stats.delivered, 3);
}

#[tokio::test(start_paused = true)]
async fn each_request_carries_the_previous_deliverys_records() {
    let mut s = settings(1, 1000);
    s.append_observability = true;
    s.concurrency = 1;
    let r = rig(vec![], s, Duration::from_millis(30));
    r.feed(0..2);
    let (c, _, timings, _) = r.finish().await;
    let shipped = c.shipped.lock().unwrap();
    assert!(
        shipped[0].get("ops_metadata").is_none(),
        "none before the first delivery"
    );
    let records = &shipped[1]["ops_metadata"]["collector_observability"];
    let first = &timings.recent()[0];
    assert_eq!(*records, serde_json::to_value(first.records()).unwrap());
    assert_eq!(records[3]["metric_name"], "call_duration_ms");
    assert_eq!(records[3]["metric_value"], 30);
}

#[tokio::test(start_paused = true)]
async fn partial_outcome_settles_each_event_and_resends_only_the_retries() {
    let partial = Outcome::Partial(vec![
        EventVerdict::Delivered,
        EventVerdict::Reject {
            reason: "bad".into(),
        },
        EventVerdict::Retry,
        EventVerdict::Delivered,
    ]);
    let r = rig(
        vec![ScriptedAnswer::Verdict(Verdict::new(400, partial))],
        settings(4, 1000),
        Duration::ZERO,
    );
    r.feed(0..4);
    let (c, acker, timings, stats) = r.finish().await;
    assert_eq!(*c.requests.lock().unwrap(), [vec![0, 1, 2, 3], vec![2]]);
    assert_eq!((stats.delivered, stats.rejected, stats.retried), (3, 1, 1));
    assert_eq!(acker.lock().watermark(P), Some(4));
    let t = &timings.recent()[0];
    assert_eq!(t.attempt_count, 2);
    assert_eq!(
        t.calls.iter().map(|c| c.status_code).collect::<Vec<_>>(),
        [400, 200]
    );
}

#[tokio::test(start_paused = true)]
async fn events_a_destination_drops_after_accepting_are_counted_and_not_resent() {
    let accepted = Verdict::new(200, Outcome::Delivered).with_dropped(2, "2 too old".into());
    let r = rig(
        vec![ScriptedAnswer::Verdict(accepted)],
        settings(4, 1000),
        Duration::ZERO,
    );
    r.feed(0..4);
    let (c, acker, _, stats) = r.finish().await;
    assert_eq!(
        c.requests.lock().unwrap().len(),
        1,
        "the protocol forbids a resend"
    );
    assert_eq!((stats.delivered, stats.dropped_by_destination), (4, 2));
    assert_eq!(acker.lock().watermark(P), Some(4));
    assert_eq!(
        Verdict::new(200, Outcome::Delivered)
            .with_dropped(0, String::new())
            .dropped,
        None,
        "nothing dropped is no drop"
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_reject_with_the_last_reason() {
    let busy = ScriptedAnswer::Verdict(Verdict::new(
        503,
        Outcome::Retry {
            reason: "busy".into(),
        },
    ));
    let r = rig(vec![busy; 10], settings(2, 1000), Duration::ZERO);
    r.feed(0..2);
    let (c, acker, timings, stats) = r.finish().await;
    assert_eq!(c.requests.lock().unwrap().len(), 5, "max_attempts = 5");
    assert_eq!((stats.delivered, stats.rejected), (0, 2));
    assert_eq!(
        acker.lock().watermark(P),
        Some(2),
        "a rejected event still finishes its offset"
    );
    assert_eq!(timings.recent()[0].status_code, 503);
}

/// The gap between a request answered 429 with `Retry-After: asked` and the next one.
async fn gap_after_retry_after(asked: Duration) -> u64 {
    let mut throttled = Verdict::new(
        429,
        Outcome::Retry {
            reason: "slow down".into(),
        },
    );
    throttled.retry_after = Some(asked);
    let r = rig(
        vec![ScriptedAnswer::Verdict(throttled)],
        settings(1, 1000),
        Duration::ZERO,
    );
    r.feed(0..1);
    let (_, _, timings, _) = r.finish().await;
    let calls = &timings.recent()[0].calls;
    calls[1].start_ms - calls[0].start_ms
}

#[tokio::test(start_paused = true)]
async fn retry_after_overrides_backoff() {
    // The backoff of a first retry is at most 100 ms here; the destination asked for 1.5 s.
    let gap = gap_after_retry_after(Duration::from_millis(1500)).await;
    assert!((1500..1600).contains(&gap), "{gap} ms");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_a_day_waits_only_max_backoff() {
    // max_backoff is 2 s: the partition is not held for the day the destination asked for.
    let gap = gap_after_retry_after(Duration::from_secs(86_400)).await;
    assert!((2000..2100).contains(&gap), "{gap} ms");
}

#[tokio::test(start_paused = true)]
async fn too_large_requests_are_split_in_halves() {
    let split = ScriptedAnswer::Verdict(Verdict::new(413, Outcome::Split));
    let r = rig(
        vec![split.clone(), split],
        settings(4, 1000),
        Duration::ZERO,
    );
    r.feed(0..4);
    let (c, acker, _, stats) = r.finish().await;
    assert_eq!(
        *c.requests.lock().unwrap(),
        [vec![0, 1, 2, 3], vec![0, 1], vec![0], vec![1], vec![2, 3]]
    );
    assert_eq!(stats.delivered, 4);
    assert_eq!(acker.lock().watermark(P), Some(4));
}

#[tokio::test(start_paused = true)]
async fn a_single_event_that_is_still_too_large_is_rejected() {
    let split = ScriptedAnswer::Verdict(Verdict::new(413, Outcome::Split));
    let r = rig(vec![split], settings(1, 1000), Duration::ZERO);
    r.feed(0..1);
    let (_, _, _, stats) = r.finish().await;
    assert_eq!((stats.delivered, stats.rejected), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn no_answer_times_out_and_is_retried() {
    let r = rig(
        vec![
            ScriptedAnswer::Hang,
            ScriptedAnswer::Fail(SendError::Connect("reset".into())),
        ],
        settings(1, 1000),
        Duration::ZERO,
    );
    r.feed(0..1);
    let (_, _, timings, stats) = r.finish().await;
    let t = &timings.recent()[0];
    assert_eq!(
        t.calls.iter().map(|c| c.status_code).collect::<Vec<_>>(),
        [0, 0, 200]
    );
    assert!(
        t.calls[0].duration_ms >= 5000,
        "request_timeout bounded the hung call"
    );
    assert_eq!(stats.delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_transport_errors_reject() {
    let fatal = ScriptedAnswer::Fail(SendError::Transport {
        message: "cannot build request".into(),
        retryable: false,
    });
    let r = rig(vec![fatal], settings(1, 1000), Duration::ZERO);
    r.feed(0..1);
    let (c, _, _, stats) = r.finish().await;
    assert_eq!(c.requests.lock().unwrap().len(), 1);
    assert_eq!(stats.rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_never_exceed_concurrency() {
    let r = rig(vec![], settings(1, 1000), Duration::from_millis(100));
    r.feed(0..10);
    let (c, acker, _, _) = r.finish().await;
    assert_eq!(c.max_in_flight.load(SeqCst), 2);
    assert_eq!(c.requests.lock().unwrap().len(), 10);
    assert_eq!(acker.lock().watermark(P), Some(10));
}

#[tokio::test(start_paused = true)]
async fn an_event_larger_than_a_batch_is_rejected_unsent() {
    let mut s = settings(10, 1000);
    s.limits.max_bytes = 100;
    let r = rig(vec![], s, Duration::ZERO);
    let mut t = TargetSet::default();
    t.insert(C);
    r.acker.lock().register(P, 0, t).unwrap();
    r.acker.lock().register(P, 1, t).unwrap();
    r.handle.send(event(0, 500));
    r.handle.send(event(1, 10));
    let (c, acker, _, stats) = r.finish().await;
    assert_eq!(*c.requests.lock().unwrap(), [vec![1]]);
    assert_eq!((stats.delivered, stats.rejected), (1, 1));
    assert_eq!(acker.lock().watermark(P), Some(2));
}

#[tokio::test(start_paused = true)]
async fn events_an_encoder_leaves_out_are_rejected_and_the_rest_sent() {
    let r = rig(vec![], settings(4, 1000), Duration::ZERO);
    *r.connector.refuse.lock().unwrap() = vec![1, 3];
    r.feed(0..4);
    let stats = r.handle.stats.clone();
    let (c, acker, _, snap) = r.finish().await;
    assert_eq!(*c.requests.lock().unwrap(), [vec![0, 2]]);
    assert_eq!((snap.delivered, snap.rejected), (2, 2));
    assert_eq!(stats.rejections().get("invalid"), Some(&2));
    assert_eq!(stats.fixes().get("touched"), Some(&2));
    assert_eq!(acker.lock().watermark(P), Some(4));
}

/// Log output, for tests that check what an operator would read.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go (the tests run on one-thread runtimes, so the
    /// engine's tasks log on the test's own thread).
    static CAPTURING: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

/// Captures this thread's log lines at INFO and above. One process-wide subscriber writes
/// to the capture of the thread logging, if any: with per-test subscribers (`set_default`)
/// tracing's per-callsite interest cache, shared by all threads, could be left disabled by
/// another test's thread, and a warning then never reached the capture.
fn capture_logs() -> Capture {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let logs = Capture::default();
    CAPTURING.with(|c| *c.borrow_mut() = Some(logs.clone()));
    logs
}

/// Writes to the logging thread's capture; discards on a thread that captures nothing.
struct ThreadCapture;

impl std::io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURING.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn changes_to_events_are_logged_with_the_event_id_once_a_minute_per_kind() {
    let logs = capture_logs();
    let r = rig(vec![], settings(4, 1000), Duration::ZERO);
    r.feed(0..4);
    let stats = r.handle.stats.clone();
    r.finish().await;
    assert_eq!(stats.fixes().get("touched"), Some(&4), "every one counted");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("event changed to fit the destination"))
        .collect();
    assert_eq!(lines.len(), 1, "one line a minute per kind: {text}");
    for part in [
        "fix=\"touched\"",
        "event_id=\"e-0\"",
        "touched offset 0",
        "connector=mem",
    ] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_health_check_warns_once_clipped_and_a_delivery_ends_it() {
    let logs = capture_logs();
    let body = format!("<html><body>{}</body></html>", "denied ".repeat(500));
    let connector = Arc::new(Scripted {
        health_error: Some(format!("HTTP 403: {body}")),
        ..Default::default()
    });
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let handle = spawn(&connector, settings(1, 10), wiring(&acker));
    // Ten checks, 10 s apart (virtual time).
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(connector.health_checks.load(SeqCst), 10);
    let stats = handle.stats.clone();
    let stats::Health::Failing(why) = stats.health() else {
        panic!("{:?}", stats.health());
    };
    assert!(why.starts_with("HTTP 403: <html><body>denied"), "{why}");
    assert!(why.chars().count() <= log::MAX_DETAIL_CHARS + 1, "{why}");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("health check failed"))
        .collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(warned[0].len() < 500, "{}", warned[0]);

    // A delivery shows the destination works: healthy, and the checks stop.
    let mut t = TargetSet::default();
    t.insert(C);
    acker.lock().register(P, 0, t).unwrap();
    handle.send(event(0, 10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stats.health(), stats::Health::Healthy);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(connector.health_checks.load(SeqCst), 10);
    handle.close().await.unwrap();
}

/// Spawns a worker for `connector` with `health_check`; returns its handle and acker.
fn checked(connector: &Arc<Scripted>, health_check: HealthCheck) -> (ConnectorHandle, Arc<Acker>) {
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let handle = spawn(
        connector,
        EngineSettings {
            health_check,
            ..settings(1, 10)
        },
        wiring(&acker),
    );
    (handle, acker)
}

#[tokio::test(start_paused = true)]
async fn a_failing_health_check_repeats_at_the_configured_interval() {
    let connector = Arc::new(Scripted {
        health_error: Some("HTTP 503".into()),
        ..Default::default()
    });
    let every_3s = HealthCheck {
        enabled: true,
        interval: Duration::from_secs(3),
    };
    let (handle, _acker) = checked(&connector, every_3s);
    // Virtual time: checks at 0, 3, …, 30 s, and none yet at 32 s.
    tokio::time::sleep(Duration::from_secs(32)).await;
    assert_eq!(connector.health_checks.load(SeqCst), 11);
    assert_eq!(
        handle.stats.health(),
        stats::Health::Failing("HTTP 503".into())
    );
    handle.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_disabled_health_check_never_asks_and_counts_as_unchecked_until_a_delivery() {
    let connector = Arc::new(Scripted {
        health_error: Some("HTTP 503".into()),
        ..Default::default()
    });
    let disabled = HealthCheck {
        enabled: false,
        ..HealthCheck::default()
    };
    let (handle, acker) = checked(&connector, disabled);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(connector.health_checks.load(SeqCst), 0);
    assert_eq!(handle.stats.health(), stats::Health::Unchecked);
    let mut t = TargetSet::default();
    t.insert(C);
    acker.lock().register(P, 0, t).unwrap();
    handle.send(event(0, 10));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.stats.health(), stats::Health::Healthy);
    assert_eq!(connector.health_checks.load(SeqCst), 0);
    handle.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_health_check_that_never_answers_fails_at_the_request_timeout_and_is_retried() {
    let connector = Arc::new(Scripted {
        health_hangs: true,
        ..Default::default()
    });
    let (handle, _acker) = checked(&connector, HealthCheck::default());
    // The request timeout is 5 s, then 10 s until the next check.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        handle.stats.health(),
        stats::Health::Failing("no answer within 5s".into())
    );
    assert_eq!(connector.health_checks.load(SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(connector.health_checks.load(SeqCst), 2);
    handle.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_too_large_to_encode_is_split_before_sending() {
    let connector = Arc::new(Scripted {
        max_request: Some(2),
        ..Default::default()
    });
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let handle = spawn(&connector, settings(5, 1000), wiring(&acker));
    let r = Rig {
        connector,
        acker,
        timings: TimingRecorder::new(1),
        handle,
    };
    r.feed(0..5);
    let (c, _, _, snap) = r.finish().await;
    assert!(c.requests.lock().unwrap().iter().all(|r| r.len() <= 2));
    assert_eq!(snap.delivered, 5);
}

#[tokio::test(start_paused = true)]
async fn block_keeps_retrying_past_max_attempts_until_delivered() {
    let busy = ScriptedAnswer::Verdict(Verdict::new(
        503,
        Outcome::Retry {
            reason: "busy".into(),
        },
    ));
    let mut s = settings(2, 1000);
    s.retry.on_exhausted = OnExhausted::Block;
    let r = rig(vec![busy; 12], s, Duration::ZERO);
    r.feed(0..2);
    let (c, acker, _, stats) = r.finish().await;
    assert_eq!(
        c.requests.lock().unwrap().len(),
        13,
        "12 failures, then delivered: never gave up at 5"
    );
    assert_eq!((stats.delivered, stats.rejected), (2, 0));
    assert_eq!(acker.lock().watermark(P), Some(2));
}

/// A parking topic in memory: every letter is stored at once.
#[derive(Default)]
struct MemParking(Mutex<Vec<Letter>>);

impl DeadLetters for MemParking {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>) {
        self.0.lock().unwrap().push(letter);
        done();
    }
}

impl MemParking {
    fn offsets(&self) -> Vec<i64> {
        let mut o: Vec<i64> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.origin.offset)
            .collect();
        o.sort();
        o
    }
}

struct Isolated {
    connector: Arc<Scripted>,
    acker: Arc<Acker>,
    parking: Arc<MemParking>,
    isolation: Arc<Isolation>,
    handle: ConnectorHandle,
}

fn isolated() -> Isolated {
    let connector = Arc::new(Scripted::default());
    connector.down.store(true, SeqCst);
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let parking = Arc::new(MemParking::default());
    let isolation = Arc::new(Isolation::new(
        "mem",
        IsolationSettings {
            detach_after: Duration::from_secs(10),
            probe_initial: Duration::from_secs(5),
            probe_max: Duration::from_secs(20),
        },
    ));
    let mut s = settings(2, 10);
    s.retry.on_exhausted = OnExhausted::Block;
    let handle = spawn(
        &connector,
        s,
        Wiring {
            timings: TimingRecorder::new(100),
            isolation: Some(Role::Main {
                isolation: isolation.clone(),
                parking: parking.clone(),
            }),
            ..wiring(&acker)
        },
    );
    Isolated {
        connector,
        acker,
        parking,
        isolation,
        handle,
    }
}

impl Isolated {
    fn feed(&self, offsets: std::ops::Range<i64>) {
        for o in offsets {
            let mut t = TargetSet::default();
            t.insert(C);
            self.acker.lock().register(P, o, t).unwrap();
            assert!(self.handle.send(event(o, 10)));
        }
    }

    fn requests(&self) -> usize {
        self.connector.requests.lock().unwrap().len()
    }
}

#[tokio::test(start_paused = true)]
async fn a_destination_failing_past_the_bound_is_detached_and_its_events_parked() {
    let r = isolated();
    r.feed(0..4);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(r.isolation.state(), State::Flowing, "still retrying");
    assert_eq!(
        r.acker.lock().watermark(P),
        None,
        "the commit point is held"
    );
    // Retries are at most 2 s apart: one lands between 10 s and 12.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(r.isolation.state(), State::Detached);
    assert_eq!(r.parking.offsets(), [0, 1, 2, 3]);
    assert_eq!(r.acker.lock().watermark(P), Some(4), "parked events finish");
    let letter = r.parking.0.lock().unwrap()[0].clone();
    assert_eq!(&*letter.connector, "mem");
    assert!(letter.reason.starts_with("parked: "), "{}", letter.reason);
    assert!(letter.attempts > 1 && letter.first_attempt_ms > 0);
    assert_eq!(r.handle.stats.snapshot().parked, 4);

    // New events are parked without a request, until a probe is due.
    let before = r.requests();
    r.feed(4..6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.requests(), before);
    assert_eq!(r.parking.offsets().len(), 6);
    assert_eq!(r.acker.lock().watermark(P), Some(6));
}

#[tokio::test(start_paused = true)]
async fn a_detached_destination_is_probed_at_a_growing_interval_then_drained() {
    let r = isolated();
    r.feed(0..2);
    // Retries are at most 2 s apart: one lands between 10 s and 12.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(r.isolation.state(), State::Detached);
    // One batch every second; probes are the ones that reach the destination.
    let mut probes_at = Vec::new();
    for second in 1..=80i64 {
        let before = r.requests();
        r.feed(second * 10..second * 10 + 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if r.requests() > before {
            assert_eq!(r.requests(), before + 1, "one request per probe");
            probes_at.push(second);
        }
    }
    let gaps: Vec<i64> = probes_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..3], [10, 20, 20], "probes at {probes_at:?}");
    assert_eq!(r.isolation.state(), State::Detached);

    // The destination answers: the next probe goes through and draining begins; new events
    // are still parked until the backlog is empty.
    r.connector.down.store(false, SeqCst);
    for second in 81..=120i64 {
        r.feed(second * 10..second * 10 + 2);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if r.isolation.state() == State::Draining {
            break;
        }
    }
    assert_eq!(r.isolation.state(), State::Draining);
    let delivered = r.handle.stats.snapshot().delivered;
    assert_eq!(delivered, 2, "the probe's two events");
    let parked = r.parking.offsets().len();
    r.feed(1000..1002);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.parking.offsets().len(), parked + 2);
    r.isolation.backlog_empty();
    r.feed(2000..2002);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.handle.stats.snapshot().delivered, 4, "flowing again");
    assert_eq!(r.parking.offsets().len(), parked + 2);
}

const Q: PartitionId = PartitionId(2);

fn event_of(partition: PartitionId, offset: i64) -> Event {
    let e = event(offset, 10);
    let origin = Origin {
        partition,
        ..e.origin().clone()
    };
    Event::parse(e.raw().clone(), origin, 1 << 20).unwrap()
}

/// An engine whose destination is down, with a dead-letter sink, fed `offsets` of `p`.
fn feed_down(
    acker: &Acker,
    handle: &ConnectorHandle,
    p: PartitionId,
    offsets: std::ops::Range<i64>,
) {
    for o in offsets {
        let mut t = TargetSet::default();
        t.insert(C);
        acker.lock().register_sized(p, o, t, 100).unwrap();
        assert!(handle.send(event_of(p, o)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_revoked_partitions_events_are_cancelled_not_delivered_nor_dead_lettered() {
    // Each attempt takes a second: the revocation comes while both first attempts are out.
    let connector = Arc::new(Scripted {
        send_delay: Duration::from_secs(1),
        ..Default::default()
    });
    connector.down.store(true, SeqCst);
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    acker.lock().assign(Q);
    let letters = Arc::new(MemParking::default());
    let handle = spawn(
        &connector,
        settings(4, 10),
        Wiring {
            dead_letters: Some(letters.clone()),
            ..wiring(&acker)
        },
    );
    feed_down(&acker, &handle, P, 0..4);
    feed_down(&acker, &handle, Q, 100..104);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(acker.lock().unfinished_bytes(), 800);
    let before = connector.requests.lock().unwrap().len();
    assert_eq!(before, 2, "both batches are being tried");
    acker.lock().revoke(P);
    assert_eq!(acker.lock().unfinished_bytes(), 400, "P's bytes released");

    // Q's retries run out and it is dead-lettered; P's events are dropped instead.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let requests = connector.requests.lock().unwrap().clone();
    assert!(
        requests[before..].iter().flatten().all(|o| *o >= 100),
        "P was sent after its revocation: {requests:?}"
    );
    assert_eq!(letters.offsets(), [100, 101, 102, 103]);
    let snap = handle.stats.snapshot();
    assert_eq!((snap.cancelled, snap.delivered, snap.rejected), (4, 0, 4));
    assert_eq!(acker.lock().unfinished_bytes(), 0);
    assert_eq!(acker.lock().total_unfinished(), 0);
    handle.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_revocation_ends_a_retry_backoff_at_once() {
    let connector = Arc::new(Scripted::default());
    connector.down.store(true, SeqCst);
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let mut s = settings(3, 10);
    // Held for an hour between attempts: only the revocation can end the wait early.
    s.retry.on_exhausted = OnExhausted::Block;
    s.retry.initial_backoff = Duration::from_secs(3600);
    s.retry.max_backoff = Duration::from_secs(3600);
    let handle = spawn(&connector, s, wiring(&acker));
    feed_down(&acker, &handle, P, 0..3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(connector.requests.lock().unwrap().len(), 1);
    let stats = handle.stats.clone();
    acker.lock().revoke(P);
    // Virtual time jumps to the next timer when idle: without the wake, the hour-long
    // backoff would outlast this second.
    let closed = tokio::time::timeout(Duration::from_secs(1), handle.close()).await;
    assert!(closed.is_ok(), "the worker still held the revoked batch");
    assert_eq!(stats.snapshot().cancelled, 3);
    assert_eq!(connector.requests.lock().unwrap().len(), 1);
}
