//! Indexer acknowledgement end to end: the HEC connector in the delivery engine against the
//! strict fake HEC, whose token demands ack. Polls are a second apart (the shortest the
//! settings allow), so each test waits on the fake's polls and the worker's close, never on
//! a sleep.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::*;
use switchyard_http::ClientOptions;
use switchyard_splunk_hec::{HecConfig, SplunkHec};
use switchyard_testkit::FakeHec;

const P: PartitionId = PartitionId(0);
const C: ConnectorIndex = ConnectorIndex(0);
const TOKEN: &str = "00000000-0000-0000-0000-00000000ac0c";
const WAIT: Duration = Duration::from_secs(20);

fn config(fake: &FakeHec, ack: bool) -> HecConfig {
    serde_json::from_value(serde_json::json!({
        "endpoint": fake.url(),
        "token": TOKEN,
        "compression": "none",
        "ack": ack,
        "ack_poll_interval_secs": 1,
        "ack_timeout_secs": 60,
    }))
    .unwrap()
}

fn settings(max_events: usize, concurrency: usize) -> EngineSettings {
    EngineSettings {
        limits: BatchLimits {
            max_events,
            max_bytes: 1 << 20,
            max_linger: Duration::from_millis(10),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            on_exhausted: OnExhausted::DeadLetter,
        },
        concurrency,
        request_timeout: Duration::from_secs(5),
        append_observability: false,
        fields: None,
        health_check: HealthCheck {
            enabled: false,
            interval: Duration::from_secs(10),
        },
        rate_limit: None,
    }
}

/// Stores every dead letter at once.
#[derive(Default)]
struct Letters(Mutex<Vec<Letter>>);

impl DeadLetters for Letters {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>) {
        self.0.lock().unwrap().push(letter);
        done();
    }
}

struct Rig {
    acker: Arc<Acker>,
    letters: Arc<Letters>,
    handle: ConnectorHandle,
}

fn rig(cfg: &HecConfig, settings: EngineSettings) -> Rig {
    let connector = SplunkHec::new(cfg, &ClientOptions::default()).unwrap();
    let acker = Arc::new(Acker::new());
    acker.lock().assign(P);
    let letters = Arc::new(Letters::default());
    let wiring = Wiring {
        acker: acker.clone(),
        timings: TimingRecorder::new(10),
        dead_letters: Some(letters.clone()),
        isolation: None,
        stats: None,
    };
    let handle = Engine::spawn(connector, "hec", C, settings, wiring);
    Rig {
        acker,
        letters,
        handle,
    }
}

impl Rig {
    fn feed(&self, offsets: std::ops::Range<i64>) {
        for offset in offsets {
            let mut targets = TargetSet::default();
            targets.insert(C);
            self.acker.lock().register(P, offset, targets).unwrap();
            let origin = Origin {
                partition: P,
                topic: "qoe".into(),
                kafka_partition: 0,
                offset,
                member: None,
            };
            let raw = format!(r#"{{"event":{{"timestamp":1700000000{offset:03}}}}}"#);
            let event = Event::parse(raw.into_bytes().into(), origin, 1 << 20).unwrap();
            assert!(self.handle.send(event));
        }
    }

    fn unfinished(&self) -> usize {
        self.acker.lock().unfinished(P)
    }

    /// Closes the queue; the worker ends once every event is settled, confirmations
    /// included.
    async fn close(self) -> (stats::ConnectorSnapshot, Arc<Acker>, Arc<Letters>) {
        let stats = self.handle.stats.clone();
        tokio::time::timeout(WAIT, self.handle.close())
            .await
            .expect("worker ends once everything is acknowledged")
            .unwrap();
        (stats.snapshot(), self.acker, self.letters)
    }
}

#[tokio::test]
async fn events_count_as_delivered_only_once_splunk_acknowledges_them() {
    let fake = FakeHec::builder(TOKEN)
        .ack()
        .ack_after_polls(2)
        .start()
        .await
        .unwrap();
    let r = rig(&config(&fake, true), settings(10, 1));
    r.feed(0..3);
    assert!(fake.wait_for_received(3, WAIT).await);
    assert!(fake.wait_for_ack_polls(1, WAIT).await, "acks are polled");
    // Indexed by Splunk's account, not yet acknowledged: nothing is delivered.
    assert_eq!(fake.acked(), 0);
    assert_eq!(r.unfinished(), 3, "an accepted request is not a delivery");
    let s = r.handle.stats.snapshot();
    assert_eq!((s.delivered, s.awaiting_confirmation), (0, 1));

    let (s, acker, _) = r.close().await;
    assert_eq!(fake.acked(), 1, "the second poll acknowledged it");
    assert_eq!((s.delivered, s.awaiting_confirmation), (3, 0));
    assert_eq!(acker.lock().watermark(P), Some(3));
    assert_eq!(fake.channels().len(), 1, "one channel for the instance");
    assert_eq!(fake.received_count(), 3, "sent once");
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn a_request_never_acknowledged_is_sent_again_after_the_ack_timeout_and_counted() {
    let fake = FakeHec::builder(TOKEN).ack().start().await.unwrap();
    fake.withhold_acks(true);
    let cfg = HecConfig {
        ack_timeout_secs: 2,
        ..config(&fake, true)
    };
    let r = rig(&cfg, settings(10, 1));
    r.feed(0..2);
    // The first request is never acknowledged: after the timeout its events go again.
    assert!(
        fake.wait_for_received(4, WAIT).await,
        "resent after the timeout"
    );
    assert!(r.handle.stats.snapshot().confirm_timeouts >= 1);
    assert_eq!(r.unfinished(), 2, "never acknowledged, never delivered");
    fake.withhold_acks(false);

    let (s, acker, letters) = r.close().await;
    assert_eq!(acker.lock().watermark(P), Some(2));
    assert_eq!(s.delivered, 2);
    assert!(s.confirm_timeouts >= 1 && s.retried >= 2, "{s:?}");
    assert!(letters.0.lock().unwrap().is_empty());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test]
async fn at_the_pending_bound_nothing_more_is_sent_until_an_ack_arrives() {
    let fake = FakeHec::builder(TOKEN).ack().start().await.unwrap();
    fake.withhold_acks(true);
    let cfg = HecConfig {
        ack_max_pending: 1,
        ..config(&fake, true)
    };
    let r = rig(&cfg, settings(1, 2));
    r.feed(0..3);
    assert!(fake.wait_for_received(1, WAIT).await);
    assert!(fake.wait_for_ack_polls(2, WAIT).await);
    assert_eq!(
        fake.received_count(),
        1,
        "one ack id pending: no second request"
    );
    assert_eq!(r.unfinished(), 3);
    fake.withhold_acks(false);

    let (s, acker, _) = r.close().await;
    assert_eq!(acker.lock().watermark(P), Some(3));
    assert_eq!(
        (s.delivered, fake.received_count(), fake.acked()),
        (3, 3, 3)
    );
}

#[tokio::test]
async fn a_token_that_demands_ack_refuses_a_connector_without_it_as_a_config_error() {
    let fake = FakeHec::builder(TOKEN).ack().start().await.unwrap();
    let r = rig(&config(&fake, false), settings(10, 1));
    r.feed(0..2);
    let (s, acker, letters) = r.close().await;
    assert_eq!((s.delivered, s.rejected, s.dead_lettered), (0, 2, 2));
    assert_eq!(
        acker.lock().watermark(P),
        Some(2),
        "dead-lettered, so finished"
    );
    let letters = letters.0.lock().unwrap();
    let reason = &letters[0].reason;
    assert!(
        reason.contains("code 10") && reason.contains("set ack = true"),
        "{reason}"
    );
    assert_eq!(fake.ack_polls(), 0);
}

#[tokio::test]
async fn without_ack_a_200_is_delivery_with_no_channel_and_no_polls() {
    let fake = FakeHec::builder(TOKEN).start().await.unwrap();
    let r = rig(&config(&fake, false), settings(10, 1));
    r.feed(0..2);
    let (s, acker, _) = r.close().await;
    assert_eq!((s.delivered, s.awaiting_confirmation), (2, 0));
    assert_eq!(acker.lock().watermark(P), Some(2));
    assert_eq!(fake.ack_polls(), 0);
}

#[tokio::test]
async fn the_ack_endpoint_refuses_an_unknown_channel_and_a_token_without_ack() {
    let fake = FakeHec::builder(TOKEN).ack().start().await.unwrap();
    let hec = SplunkHec::new(&config(&fake, true), &ClientOptions::default()).unwrap();
    // Nothing was sent on this channel: Splunk does not know it (code 11); the connector
    // opens a new channel, and the receipt, of the old one, is no longer asked about.
    let receipt = switchyard_splunk_hec::ack::receipt(0, 0);
    let e = hec.confirm(&[receipt]).await.unwrap_err();
    assert!(
        e.to_string().contains("code\":11") || e.to_string().contains("new channel"),
        "{e}"
    );
    assert_eq!(
        hec.confirm(&[receipt]).await.unwrap(),
        Vec::<Receipt>::new()
    );
    assert_eq!(fake.ack_polls(), 1);

    let plain = FakeHec::builder(TOKEN).start().await.unwrap();
    let hec = SplunkHec::new(&config(&plain, true), &ClientOptions::default()).unwrap();
    let e = hec.confirm(&[receipt]).await.unwrap_err();
    assert!(e.to_string().contains("set ack = false"), "{e}");
}

#[tokio::test]
async fn an_invalid_channel_is_replaced_and_the_request_resent_on_the_new_one() {
    let fake = FakeHec::builder(TOKEN).ack().start().await.unwrap();
    fake.script([switchyard_testkit::hec::Reply::code(
        400,
        11,
        "Invalid data channel",
        None,
    )]);
    let r = rig(&config(&fake, true), settings(10, 1));
    r.feed(0..2);
    let (s, acker, letters) = r.close().await;
    let codes: Vec<i64> = fake.seen().iter().map(|s| s.code).collect();
    assert_eq!(codes, [11, 0], "refused once, then accepted");
    assert_eq!((s.delivered, fake.acked()), (2, 1));
    assert_eq!(acker.lock().watermark(P), Some(2));
    assert!(letters.0.lock().unwrap().is_empty());
}
