//! Micro-benchmarks of the per-event hot paths on events generated from the sample (compact
//! JSON, varied types and sizes, as collectors write them): the routing scan, each
//! configured destination's encoder (as configured, and uncompressed where the kind has a
//! `compression` key) with the bytes it puts on the wire, and gzip. `make bench-micro` (or
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
            encoder_bench(&runtime, &format!("{kind} encode"), &*p.kind, &events);
        }
        encoder_bench(
            &runtime,
            &format!("{kind} encode as configured"),
            &*c.kind,
            &events,
        );
    }
    let body: Vec<u8> = events
        .iter()
        .flat_map(|e| e.raw().iter().copied())
        .collect();
    bench("gzip level 1 (raw events)", BATCH, batch_bytes, || {
        black_box(compress::gzip(black_box(&body)).unwrap());
    });
    let ratio = body.len() as f64 / compress::gzip(&body).unwrap().len() as f64;
    println!(
        "\ngzip level {} ratio: {ratio:.1}:1 (generated events share their template: real traffic compresses less)",
        compress::GZIP_LEVEL
    );
}
