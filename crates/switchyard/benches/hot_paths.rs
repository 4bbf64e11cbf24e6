//! Micro-benchmarks of the per-event hot paths on events generated from the sample (compact
//! JSON, varied types and sizes, as collectors write them): the routing scan, each
//! destination's encoder (alone and with compression), and gzip. `make bench-micro` (or
//! `cargo bench --bench hot_paths`) runs them; they print numbers and assert nothing.
//!
//! A tiny harness rather than criterion: it keeps `make test` (which compiles benches for
//! clippy) light, and these numbers only need to be comparable run to run.

use bytes::Bytes;
use std::hint::black_box;
use std::time::{Duration, Instant};
use switchyard::settings::Settings;
use switchyard_core::{Connector, Event, Origin, PartitionId, Router, Shipment, compress};
use switchyard_datadog_logs::{DatadogConfig, DatadogLogs};
use switchyard_kinesis_firehose::FirehoseConfig;
use switchyard_kinesis_firehose::encode::encode as firehose_encode;
use switchyard_newrelic_events::flatten::Flattener;
use switchyard_newrelic_events::{NewRelicConfig, NewRelicEvents};
use switchyard_splunk_hec::{HecConfig, SplunkHec};
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

fn origin() -> Origin {
    Origin {
        partition: PartitionId(0),
        topic: "qoe".into(),
        kafka_partition: 0,
        offset: 0,
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

    for c in &settings.connectors {
        // The encoders of the kinds this bench knows, as the repo config sets them up.
        let kind = &c.kind;
        if let Some(cfg) = kind.downcast_ref::<HecConfig>() {
            let mut cfg = cfg.clone();
            cfg.compression = compress::Compression::None;
            let plain = SplunkHec::new(&cfg, &Default::default()).unwrap();
            bench("splunk_hec encode", BATCH, batch_bytes, || {
                black_box(plain.encode(Shipment::plain(black_box(&events))).unwrap());
            });
            cfg.compression = compress::Compression::Gzip;
            let gz = SplunkHec::new(&cfg, &Default::default()).unwrap();
            bench("splunk_hec encode + gzip", BATCH, batch_bytes, || {
                black_box(gz.encode(Shipment::plain(black_box(&events))).unwrap());
            });
        }
        if let Some(cfg) = kind.downcast_ref::<DatadogConfig>() {
            let mut cfg = cfg.clone();
            cfg.compression = compress::Compression::None;
            let plain = DatadogLogs::new(&cfg, &Default::default()).unwrap();
            bench("datadog_logs encode", BATCH, batch_bytes, || {
                black_box(plain.encode(Shipment::plain(black_box(&events))).unwrap());
            });
            cfg.compression = compress::Compression::Gzip;
            let gz = DatadogLogs::new(&cfg, &Default::default()).unwrap();
            bench("datadog_logs encode + gzip", BATCH, batch_bytes, || {
                black_box(gz.encode(Shipment::plain(black_box(&events))).unwrap());
            });
        }
        if let Some(cfg) = kind.downcast_ref::<FirehoseConfig>() {
            // The records only (the AWS SDK's JSON, base64 and SigV4 come on top).
            let delimiter = cfg.record_delimiter.as_bytes();
            bench("kinesis_firehose records", BATCH, batch_bytes, || {
                black_box(firehose_encode(
                    Shipment::plain(black_box(&events)),
                    delimiter,
                    false,
                ));
            });
        }
        if let Some(cfg) = kind.downcast_ref::<NewRelicConfig>() {
            let flattener = Flattener::new(cfg).unwrap();
            bench("newrelic_events flatten", BATCH, batch_bytes, || {
                let mut out = Vec::with_capacity(batch_bytes * 2);
                black_box(flattener.encode(Shipment::plain(black_box(&events)), &mut out));
            });
            // New Relic always compresses (and limits the compressed body to 10^6 bytes).
            let nr = NewRelicEvents::new(cfg, &Default::default()).unwrap();
            bench(
                "newrelic_events flatten + gzip",
                200,
                batch_bytes / BATCH * 200,
                || {
                    black_box(
                        nr.encode(Shipment::plain(black_box(&events[..200])))
                            .unwrap(),
                    );
                },
            );
        }
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
