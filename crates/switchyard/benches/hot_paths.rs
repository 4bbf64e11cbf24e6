//! Micro-benchmarks of the per-event hot paths on events generated from the sample (compact
//! JSON, varied types and sizes, as collectors write them): the routing scan, each
//! configured destination's encoder (as configured, and uncompressed where the kind has a
//! `compression` key) with the bytes it puts on the wire, and each compression algorithm and
//! level, on the sample's events and on a varied corpus. `make bench-micro` (or
//! `cargo bench --bench hot_paths`) runs them; they print numbers and assert nothing.
//!
//! A tiny harness rather than criterion: it keeps `make test` (which compiles benches for
//! clippy) light, and these numbers only need to be comparable run to run.

use bytes::Bytes;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::settings::{ConnectorOverride, ConnectorSettings, Settings};
use switchyard_core::record::{self, Limits};
use switchyard_core::{
    DEFAULT_SAMPLE_KEY, EncodeError, Event, FieldSelection, Filter, Origin, PartitionId, Router,
    Sample, Shaped, Shipment, compress,
};
use switchyard_destination::ConnectorConfig;
use switchyard_testkit::Generator;

const BATCH: usize = 500;

/// Runs `f` (which handles `per_call` events of `bytes` input bytes) for about a second and
/// prints the best of five rounds.
fn bench(name: &str, per_call: usize, bytes: usize, mut f: impl FnMut()) {
    // Under `cargo test --all-targets` (no --bench): run each path once, time nothing.
    if !std::env::args().any(|a| a == "--bench") {
        f();
        return;
    }
    let mut calls = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..calls {
            f();
        }
        if t.elapsed() > Duration::from_millis(100) {
            break;
        }
        calls *= 2;
    }
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed() / calls as u32
        })
        .min()
        .unwrap_or_default();
    let per_event = best.as_nanos() as f64 / per_call as f64;
    let mib_s = bytes as f64 / best.as_secs_f64() / (1 << 20) as f64;
    println!("{name:<40} {per_event:>10.0} ns/event {mib_s:>9.1} MiB/s of input");
}

/// Connector `c`'s `settings` as overrides.
fn overrides(
    c: &ConnectorSettings,
    settings: Vec<(&'static str, String)>,
) -> Vec<ConnectorOverride> {
    settings
        .into_iter()
        .map(|(key, value)| ConnectorOverride {
            id: c.id.clone(),
            key,
            value: value.into(),
        })
        .collect()
}

/// Times `kind`'s encoder on the largest prefix of `events` one request takes (New Relic's
/// compressed limit is 10^6 bytes), and prints what a request puts on the wire per event.
fn encoder_bench(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    kind: &dyn ConnectorConfig,
    events: &[Event],
) {
    let encoder = runtime
        .block_on(kind.encoder(&Default::default()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut n = events.len();
    let size = loop {
        match encoder.encoded_size(Shipment::plain(&events[..n])) {
            Ok(size) => break size,
            Err(EncodeError::TooLarge { .. }) if n > 1 => n /= 2,
            Err(e) => panic!("{name}: {e}"),
        }
    };
    let bytes = events[..n].iter().map(|e| e.raw().len()).sum();
    bench(name, n, bytes, || {
        black_box(
            encoder
                .encoded_size(Shipment::plain(black_box(&events[..n])))
                .unwrap(),
        );
    });
    println!(
        "{:<40} {:>10.0} bytes/event on the wire",
        "",
        size as f64 / n as f64
    );
}

fn origin() -> Origin {
    Origin {
        partition: PartitionId(0),
        topic: "qoe".into(),
        kafka_partition: 0,
        offset: 0,
        member: None,
    }
}

fn main() {
    let mut generator = Generator::new("bench", 1).connector_lists(&[
        "dz-connector-splunk,dz-connector-datadog,dz-connector-newrelic,dz-connector-kinesis-firehose",
    ]);
    let raws: Vec<Bytes> = (0..BATCH)
        .map(|_| Bytes::from(generator.next_event().1))
        .collect();
    let events: Vec<Event> = raws
        .iter()
        .map(|r| Event::parse(r.clone(), origin(), 1 << 20).unwrap())
        .collect();
    let batch_bytes: usize = raws.iter().map(Bytes::len).sum();
    let varied = vary(&events);
    let mean = batch_bytes / BATCH;
    println!("{BATCH} generated events, {mean} bytes on average; encoders run on the batch\n");

    let mut next = 0;
    bench("routing scan (Event::parse)", 1, mean, || {
        next = (next + 1) % BATCH;
        black_box(Event::parse(black_box(raws[next].clone()), origin(), 1 << 20).unwrap());
    });
    // The vendor's payload shape: ten events to a record, cut into members and each scanned.
    let arrays: Vec<Bytes> = raws
        .chunks(10)
        .map(|c| {
            let members: Vec<&[u8]> = c.iter().map(|b| b.as_ref()).collect();
            Bytes::from([b"[".as_slice(), &members.join(&b","[..]), b"]"].concat())
        })
        .collect();
    let limits = Limits {
        max_bytes: 1 << 24,
        max_members: 1_000,
    };
    let mut next_array = 0;
    bench(
        "array record scan, per event (10/record)",
        10,
        10 * mean,
        || {
            next_array = (next_array + 1) % arrays.len();
            let record = record::parse(
                black_box(arrays[next_array].clone()),
                None,
                origin(),
                limits,
            );
            black_box(record.unwrap());
        },
    );
    let lookup = |name: &str| match name {
        "NEW_RELIC_ACCOUNT_ID" => Some("1234567".to_string()),
        _ => Some("bench-secret".to_string()),
    };
    let toml = include_str!("../../../connectors.toml");
    let settings = Settings::from_toml(toml, &lookup, false).expect("the repo config is valid");
    let routes = settings
        .connectors
        .iter()
        .map(|c| switchyard_core::Route {
            id: c.id.clone(),
            enabled: true,
            filter: c.filter.clone(),
        })
        .collect();
    let router = Router::new(routes, &[]);
    bench("route (connector_list → targets)", 1, mean, || {
        black_box(router.route(black_box(&events[0])));
    });
    // One connector sampling a quarter of the sessions: the scan for the session id is the
    // cost (docs/payloads.md).
    let sampled = Router::new(
        vec![switchyard_core::Route {
            id: "dz-connector-splunk".into(),
            enabled: true,
            filter: Filter {
                sample: Some(Sample::new(0.25, DEFAULT_SAMPLE_KEY).expect("valid")),
                ..Filter::default()
            },
        }],
        &[],
    );
    bench("route, one connector sampling", 1, mean, || {
        next = (next + 1) % BATCH;
        black_box(sampled.route(black_box(&events[next])));
    });
    // A typical field selection (the commented example of connectors.toml) with the records
    // of a delivery, shaping a batch as the engine does once per attempt.
    let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let fields = Arc::new(
        FieldSelection::new(
            &[],
            &s(&["user_details.client_ip", "custom"]),
            &[("event.type".into(), "event_type".into())],
            &[("env".into(), "prod".into())],
        )
        .expect("valid"),
    );
    let records = br#"{"time":1,"metric_name":"queue_duration_ms","dimension":{"target":"dz-connector-splunk"},"metric_value":3},{"time":1,"metric_name":"send_duration_ms","dimension":{"target":"dz-connector-splunk","status_code":200,"attempt_count":1},"metric_value":20}"#;
    bench(
        "field selection (Shaped::build)",
        BATCH,
        batch_bytes,
        || {
            black_box(Shaped::build(
                &fields,
                black_box(events.clone()),
                Some(records),
            ));
        },
    );

    // Every connector's encoder, built through the registry as the router builds it, pointed
    // at an address nothing listens on (nothing is sent): as the repo config sets it up, and
    // without compression where its kind has the key.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let nowhere: Vec<ConnectorOverride> = settings
        .connectors
        .iter()
        .flat_map(|c| overrides(c, c.kind.stand_in_settings("http://127.0.0.1:9", "bench")))
        .collect();
    let configured = Settings::from_toml_with(toml, &lookup, &nowhere).expect("overrides apply");
    for (corpus, events) in [("sample", &events), ("varied", &varied)] {
        println!("\n-- encoders on the {corpus} corpus");
        for c in &configured.connectors {
            let kind = c.kind.kind();
            let plain = [
                nowhere.clone(),
                overrides(c, vec![("compression", "none".into())]),
            ]
            .concat();
            if let Some(p) = Settings::from_toml_with(toml, &lookup, &plain)
                .ok()
                .and_then(|s| s.connectors.into_iter().find(|p| p.id == c.id))
            {
                encoder_bench(
                    &runtime,
                    &format!("{kind} encode ({corpus})"),
                    &*p.kind,
                    events,
                );
            }
            encoder_bench(
                &runtime,
                &format!("{kind} as configured ({corpus})"),
                &*c.kind,
                events,
            );
        }
    }
    // Every algorithm and level on the raw events of one request, on both corpora: the
    // table of docs/performance.md.
    let codecs = [
        compress::Codec::Gzip { level: 1 },
        compress::Codec::Gzip { level: 3 },
        compress::Codec::Gzip { level: 6 },
        compress::Codec::Gzip { level: 9 },
        compress::Codec::Zstd { level: 1 },
        compress::Codec::Zstd { level: 3 },
        compress::Codec::Zstd { level: 6 },
        compress::Codec::Zstd { level: 9 },
        compress::Codec::Zstd { level: 12 },
        compress::Codec::Zstd { level: 19 },
    ];
    for (corpus, events) in [("sample", &events), ("varied", &varied)] {
        let body: Vec<u8> = events
            .iter()
            .flat_map(|e| e.raw().iter().copied())
            .collect();
        println!(
            "\n-- codecs on the {corpus} corpus: {} bytes/event raw",
            body.len() / BATCH
        );
        for codec in codecs {
            let name = format!("{codec:?} ({corpus})");
            bench(&name, BATCH, body.len(), || {
                black_box(codec.compress(black_box(&body)).unwrap());
            });
            let packed = codec.compress(&body).unwrap().len();
            println!(
                "{:<40} {:>10.0} bytes/event, ratio {:.1}:1",
                "",
                packed as f64 / BATCH as f64,
                body.len() as f64 / packed as f64
            );
        }
    }
}

/// The generated events with what real traffic varies and the sample repeats randomised: ids,
/// IPs, timestamps, metric values, user agents and browsers, so that a compressor cannot
/// find most of an event in the one before it.
fn vary(events: &[Event]) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(17);
    events
        .iter()
        .map(|e| {
            let mut v: serde_json::Value = serde_json::from_slice(e.raw()).expect("JSON");
            // What a viewer keeps for a session (device, IP, browser) comes from the session.
            let session_id = v["user_details"]["content_session_id"].to_string();
            let mut session = fastrand::Rng::with_seed(
                session_id
                    .bytes()
                    .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
            );
            vary_value(&mut rng, &mut session, &mut v);
            let raw = Bytes::from(serde_json::to_vec(&v).expect("JSON"));
            Event::parse(raw, origin(), 1 << 20).expect("an event")
        })
        .collect()
}

const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.99 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Roku/DVP-12.5 (12.5.0.4174-AE)",
];
const BROWSERS: [(&str, &str); 5] = [
    ("Chrome", "123.0.0.0"),
    ("Safari", "17.4"),
    ("Edge", "124.0.2478.51"),
    ("Firefox", "125.0"),
    ("Samsung Internet", "24.0"),
];

/// Varies `v`: per-event values from `rng`, per-session ones from `session`.
/// Customer, configuration and connector list stay as generated (a few per router).
fn vary_value(rng: &mut fastrand::Rng, session: &mut fastrand::Rng, v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let browser = BROWSERS[session.usize(..BROWSERS.len())];
            for (k, x) in map.iter_mut() {
                match (k.as_str(), &mut *x) {
                    ("user_agent", Value::String(s)) => {
                        *s = USER_AGENTS[session.usize(..USER_AGENTS.len())].into()
                    }
                    ("browser_name", Value::String(s)) => *s = browser.0.into(),
                    ("browser_version", Value::String(s)) => *s = browser.1.into(),
                    (
                        "customer_code" | "configuration_id" | "connector_list"
                        | "content_session_id",
                        _,
                    ) => {}
                    ("client_ip", Value::String(s)) => {
                        *s = format!(
                            "{}.{}.{}.0",
                            session.u8(1..224),
                            session.u8(..),
                            session.u8(..)
                        )
                    }
                    ("app_session_id" | "device_id", Value::String(s)) => {
                        *s = format!("{:032x}", session.u128(..))
                    }
                    ("event_id", Value::String(s)) => *s = format!("{:032x}", rng.u128(..)),
                    _ => vary_value(rng, session, x),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| vary_value(rng, session, x)),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                let varied = if i > 1_000_000_000_000 {
                    // A timestamp: within the same day.
                    i - 43_200_000 + rng.u64(..86_400_000)
                } else if i == 0 {
                    if rng.u8(..4) == 0 { rng.u64(..500) } else { 0 }
                } else {
                    rng.u64(..i.saturating_mul(2).max(10))
                };
                *v = Value::from(varied);
            } else if let Some(f) = n.as_f64() {
                let varied = (f.abs().max(1.0) * 2.0 * rng.f64() * 1000.0).round() / 1000.0;
                *v = Value::from(varied);
            }
        }
        Value::String(s)
            if s.contains("...")
                || (s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')) =>
        {
            // Some other id: a fresh 128-bit one.
            *s = format!("{:032x}", rng.u128(..));
        }
        _ => {}
    }
}
