//! Each `compression` sends what it says: the `Content-Encoding` and a body the strict fake
//! decodes, with every event arriving.

use switchyard_core::compress::Compression;
use switchyard_core::{Connector, Event, Outcome, Shipment, Verdict};
use switchyard_datadog_logs::{DatadogConfig, DatadogLogs};
use switchyard_http::ClientOptions;
use switchyard_testkit::{FakeDatadog, event};

const KEY: &str = "dd-key";

fn config(fake: &FakeDatadog, compression: &str, level: Option<i32>) -> DatadogConfig {
    let mut fields = serde_json::json!({
        "endpoint": fake.url(),
        "api_key": KEY,
        "compression": compression,
    });
    if let Some(level) = level {
        fields["compression_level"] = level.into();
    }
    serde_json::from_value(fields).unwrap()
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(&format!(
                r#"{{"event":{{"type":"heartbeat","timestamp":{}}},"event_id":"e{i}","customer_code":"acme"}}"#,
                1_712_167_312_000u64 + i as u64
            ))
        })
        .collect()
}

async fn deliver(cfg: &DatadogConfig, events: &[Event]) -> (Verdict, Option<&'static str>) {
    let c = DatadogLogs::new(cfg, &ClientOptions::default()).unwrap();
    let encoded = c.encode(Shipment::plain(events)).unwrap();
    let encoding = encoded.request.encoding;
    let response = c.send(&encoded.request).await.unwrap();
    (c.classify(&response, events), encoding)
}

#[tokio::test]
async fn zstd_gzip_and_none_each_arrive_whole_with_their_content_encoding() {
    for (compression, level, expected) in [
        ("zstd", None, Some("zstd")),
        ("zstd", Some(19), Some("zstd")),
        ("gzip", Some(9), Some("gzip")),
        ("gzip", None, Some("gzip")),
        ("none", None, None),
    ] {
        let fake = FakeDatadog::start(KEY).await.unwrap();
        let cfg = config(&fake, compression, level);
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let sent = events(300);
        let (verdict, encoding) = deliver(&cfg, &sent).await;
        assert_eq!(encoding, expected, "{compression} {level:?}");
        assert!(
            matches!(verdict.outcome, Outcome::Delivered),
            "{compression}: {verdict:?}"
        );
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].items, 300, "{compression}: every event decoded");
        assert_eq!(seen[0].compressed, expected.is_some());
        assert!(fake.violations().is_empty(), "{:?}", fake.violations());
        assert_eq!(fake.received_count(), 300);
    }
}

#[test]
fn a_level_outside_the_algorithm_is_a_problem_under_its_key() {
    let mut cfg: DatadogConfig = serde_json::from_value(serde_json::json!({
        "api_key": KEY, "compression": "zstd", "compression_level": 20
    }))
    .unwrap();
    assert_eq!(
        cfg.problems(),
        [(
            "compression_level",
            "20 is not a zstd level (it takes 1 to 19)".to_string()
        )]
    );
    cfg.compression = Compression::None;
    assert_eq!(cfg.problems()[0].0, "compression_level");
    cfg.compression_level = None;
    assert!(cfg.problems().is_empty());
}
