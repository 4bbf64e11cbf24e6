//! End-to-end benchmark (`make bench`): the release `switchyard run`, with the repo's
//! `connectors.toml`, consuming a Kafka-protocol broker (librdkafka's mock cluster) preloaded
//! with generated events and delivering to fast local stand-ins of its enabled destinations.
//!
//! Per scenario (sample-size and small events, each fanned out to every enabled destination,
//! `…-fanout-N`, and to one of them; and sample events ten to a record as JSON arrays,
//! `sample-array-10-…`) it measures throughput on the preloaded backlog, then latency at a fixed
//! offered load of half that throughput, checks that every event reached every destination it
//! was meant for, and writes everything to `target/bench/results.json`. See
//! docs/performance.md for what each number means.
//!
//! Knobs: SWITCHYARD_BENCH_EVENTS (sample-size events per scenario; small ones get four
//! times as many), SWITCHYARD_BENCH_LATENCY_SECS, SWITCHYARD_BENCH_SCENARIOS (names, comma
//! separated), SWITCHYARD_BENCH_CONFIG, SWITCHYARD_BENCH_PRICES (the price table of the cost
//! report, `prices.toml` here by default). `SWITCHYARD__CONNECTORS__<ID>__ENABLED=false` leaves a
//! destination out of the run, as it would the router.

mod cost;
mod load;
mod router;
mod standins;

use cost::Prices;
use load::{Events, Size};
use router::RouterProcess;
use serde_json::{Value, json};
use standins::{Progress, Tally, now_us};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use switchyard::settings::Settings;
use switchyard_testkit::Broker;

/// The latency run never produces more than this many events.
const MAX_LATENCY_EVENTS: u64 = 1_000_000;
/// How long any one wait may take before the benchmark gives up (and fails).
const PATIENCE: Duration = Duration::from_secs(600);
/// librdkafka's mock cluster keeps the newest 5 MiB of a partition: the preload stays under.
const PARTITION_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
enum FanOut {
    /// Every event names every enabled destination.
    All,
    /// Every event names one destination, in turn.
    One,
}

struct Scenario {
    name: String,
    size: Size,
    fan_out: FanOut,
    events: u64,
    /// The first destination is down for the whole run: it is detached, its events parked,
    /// and what is measured is the others' throughput and the router's CPU meanwhile.
    one_down: bool,
    /// Events per Kafka record: more than one writes JSON arrays (the vendor's payload).
    per_record: u64,
}

struct Knobs {
    config: PathBuf,
    latency_secs: f64,
    prices: Prices,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes --bench. Without it this is `cargo test --all-targets` (make test) on
    // a debug build: a smoke run that keeps the harness honest, small and apart from results.
    let benching = std::env::args().any(|a| a == "--bench");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let prices = match Prices::load() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let knobs = Knobs {
        config: std::env::var("SWITCHYARD_BENCH_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("connectors.toml"))
            .canonicalize()
            .unwrap_or_default(),
        latency_secs: env_or(
            "SWITCHYARD_BENCH_LATENCY_SECS",
            if benching { 10.0 } else { 1.0 },
        ),
        prices,
    };
    let n: u64 = env_or(
        "SWITCHYARD_BENCH_EVENTS",
        if benching { 200_000 } else { 2_000 },
    );
    // "All" fans out to every enabled connector of the config: the names say to how many.
    let fan = match Settings::load(&knobs.config.to_string_lossy(), &|_| Some("1".into())) {
        Ok(s) => s.connectors.iter().filter(|c| c.enabled).count(),
        Err(e) => {
            eprintln!("{}: {e}", knobs.config.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let all = format!("sample-fanout-{fan}");
    let arrays = format!("sample-array-10-fanout-{fan}");
    let only = std::env::var("SWITCHYARD_BENCH_SCENARIOS").unwrap_or_else(|_| {
        if benching {
            String::new()
        } else {
            format!("{all},{arrays}")
        }
    });
    let scenarios: Vec<Scenario> = [
        (all.clone(), Size::Sample, FanOut::All, n, 1),
        // The vendor's payload shape: ten events to a record, each array unpacked.
        (arrays.clone(), Size::Sample, FanOut::All, n, 10),
        // Every event is parked as well as delivered: a quarter as many keeps the mock's
        // memory (it holds the parking topic too) well in hand.
        (
            format!("{all}-one-down"),
            Size::Sample,
            FanOut::All,
            n / 4,
            1,
        ),
        ("sample-fanout-1".into(), Size::Sample, FanOut::One, n, 1),
        (
            format!("small-fanout-{fan}"),
            Size::Small,
            FanOut::All,
            4 * n,
            1,
        ),
        ("small-fanout-1".into(), Size::Small, FanOut::One, 4 * n, 1),
    ]
    .into_iter()
    .filter(|(name, ..)| only.is_empty() || only.split(',').any(|o| o.trim() == *name))
    .map(|(name, size, fan_out, events, per_record)| Scenario {
        one_down: name.ends_with("-one-down"),
        name,
        size,
        fan_out,
        events: events / per_record * per_record,
        per_record,
    })
    .collect();

    let out_dir = root.canonicalize().unwrap_or(root).join("target/bench");
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("cannot create {}: {e}", out_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "switchyard end-to-end benchmark: {} ({} CPUs)",
        knobs.config.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Vec::new();
    let mut failed = false;
    for s in &scenarios {
        println!("\n== {} ({} events) ==", s.name, s.events);
        match rt.block_on(run(s, &knobs, &out_dir)) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{}: INVALID: {e}", s.name);
                results.push(json!({"scenario": s.name, "error": e}));
                failed = true;
            }
        }
    }
    print_table(&results);
    let doc = json!({
        "benchmark": "switchyard end-to-end",
        "config": knobs.config.display().to_string(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu_model(),
        "prices": knobs.prices.to_json(),
        "unix_time": now_us() / 1_000_000,
        "scenarios": results,
    });
    let path = out_dir.join(if benching {
        "results.json"
    } else {
        "smoke.json"
    });
    match serde_json::to_string_pretty(&doc).map(|s| std::fs::write(&path, s + "\n")) {
        Ok(Ok(())) => println!("\nwrote {}", path.display()),
        Ok(Err(e)) => eprintln!("writing {}: {e}", path.display()),
        Err(e) => eprintln!("results: {e}"),
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A destination of the run: its connector id, kind and its stand-in's tally.
struct Destination {
    id: String,
    kind: &'static str,
    tally: Arc<Tally>,
}

async fn run(s: &Scenario, knobs: &Knobs, out_dir: &Path) -> Result<Value, String> {
    let config = knobs.config.to_string_lossy().to_string();
    // `${NAME}` secrets are replaced by overrides below; any value does for reading the file.
    let settings = Settings::load(&config, &|_| Some("1".into())).map_err(|e| e.to_string())?;
    let enabled: Vec<_> = settings.connectors.iter().filter(|c| c.enabled).collect();
    let ids: Vec<String> = enabled.iter().map(|c| c.id.clone()).collect();
    let lists = match s.fan_out {
        FanOut::All => vec![ids.join(",")],
        FanOut::One => ids.clone(),
    };
    let fan_out = if matches!(s.fan_out, FanOut::All) {
        ids.len() as u64
    } else {
        1
    };
    // Deliveries that arrive: the destination that is down gets none.
    let delivered_fan_out = fan_out - u64::from(s.one_down);
    let events = Events::new(s.size, &lists, s.per_record);
    let topic = settings.kafka.topics.first().ok_or("no topic configured")?;

    let broker = Broker::mock()?;
    let partitions = (events.bytes() * s.events as usize)
        .div_ceil(PARTITION_BYTES)
        .max(8) as i32;
    broker.create_topic(topic, partitions)?;
    if let Some(dlq) = &settings.dead_letter.topic {
        broker.create_topic(dlq, 1)?;
    }
    if settings.parking.enabled {
        // When one destination is down, room for all its events (the mock keeps 5 MiB per
        // partition); otherwise a parking topic of the size an operator would create.
        let parking_partitions = if s.one_down {
            (events.bytes() * (s.events + MAX_LATENCY_EVENTS) as usize)
                .div_ceil(PARTITION_BYTES)
                .max(8) as i32
        } else {
            8
        };
        broker.create_topic(&settings.parking.topic, parking_partitions)?;
    }

    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let mut env = vec![
        (
            "SWITCHYARD__KAFKA__BROKERS".to_string(),
            broker.bootstrap_servers().to_string(),
        ),
        ("SWITCHYARD__ADMIN__ENABLED".into(), "true".into()),
        ("SWITCHYARD__ADMIN__BIND".into(), admin.to_string()),
    ];
    let progress = Arc::new(Progress::default());
    let destinations = stand_ins(
        &settings,
        s.events + MAX_LATENCY_EVENTS,
        s.one_down,
        &progress,
        &mut env,
    )
    .await?;

    println!(
        "preloading {} events of {} bytes into {partitions} partitions",
        s.events,
        events.bytes()
    );
    let bootstrap = broker.bootstrap_servers().to_string();
    tokio::task::block_in_place(|| load::preload(&bootstrap, topic, partitions, &events, s.events))
        .map_err(|e| format!("preloading: {e}"))?;

    // Throughput: the whole backlog, from partition assignment to the last first arrival.
    let config = out_dir.join(format!("{}.toml", s.name));
    std::fs::write(
        &config,
        with_short_fetch_wait(&std::fs::read_to_string(&knobs.config).map_err(|e| e.to_string())?),
    )
    .map_err(|e| format!("writing {}: {e}", config.display()))?;
    let log = out_dir.join(format!("{}.router.log", s.name));
    let mut router = RouterProcess::spawn(&config, &env, admin, &log)
        .map_err(|e| format!("starting switchyard run: {e}"))?;
    tokio::task::block_in_place(|| router.wait_assigned(Duration::from_secs(60)))?;
    let (t0, cpu0) = (now_us(), router.cpu_seconds()?);
    let own0 = router::cpu_seconds("self")?;
    let backlog = s.events * delivered_fan_out;
    wait(&progress, backlog).await?;
    let t1 = progress.last_arrival_us.load(Relaxed);
    let cpu1 = router.cpu_seconds()?;
    let own1 = router::cpu_seconds("self")?;
    let secs = (t1.saturating_sub(t0)) as f64 / 1e6;
    let events_per_sec = s.events as f64 / secs;
    let cpu_per_million = (cpu1 - cpu0) / s.events as f64 * 1e6;
    println!(
        "throughput: {events_per_sec:.0} events/s, {:.1} MiB/s in, {cpu_per_million:.1} CPU-s per million events (router {:.1} CPU-s, broker and stand-ins {:.1} CPU-s in {secs:.1} s)",
        events_per_sec * events.bytes() as f64 / (1 << 20) as f64,
        cpu1 - cpu0,
        own1 - own0,
    );

    // Latency: half that rate, each event stamped when produced.
    let rate = events_per_sec / 2.0;
    let per = s.per_record;
    let count = ((rate * knobs.latency_secs) as u64).clamp(per, MAX_LATENCY_EVENTS) / per * per;
    for d in &destinations {
        d.tally.latency_from.store(s.events, Relaxed);
    }
    let (cpu2, own2, t2) = (
        router.cpu_seconds()?,
        router::cpu_seconds("self")?,
        now_us(),
    );
    let achieved = tokio::task::block_in_place(|| {
        load::offer(
            &bootstrap, topic, partitions, &events, s.events, count, rate,
        )
    })
    .map_err(|e| format!("producing the latency load: {e}"))?;
    wait(&progress, backlog + count * delivered_fan_out).await?;
    let (cpu3, own3, t3) = (
        router.cpu_seconds()?,
        router::cpu_seconds("self")?,
        now_us(),
    );
    let latency_secs = t3.saturating_sub(t2) as f64 / 1e6;
    let mut latencies: Vec<u32> = destinations
        .iter()
        .flat_map(|d| d.tally.take_latencies())
        .collect();
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q).round() as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    println!(
        "latency at {rate:.0} events/s ({achieved:.0} achieved): p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (router {:.2} cores, broker, producer and stand-ins {:.2})",
        (cpu3 - cpu2) / latency_secs,
        (own3 - own2) / latency_secs,
    );
    let peak_rss = router.peak_rss_bytes()?;
    router.stop()?;

    let total = s.events + count;
    let reached = &destinations[usize::from(s.one_down)..];
    verify(reached, s.fan_out, total)?;
    let duplicates: u64 = destinations
        .iter()
        .map(|d| d.tally.duplicates.load(Relaxed))
        .sum();
    println!(
        "verified: all {total} events reached every destination they named{} ({} deliveries, {duplicates} duplicates); peak RSS {:.0} MiB",
        if s.one_down {
            ", the one down excepted (detached: its events parked)"
        } else {
            ""
        },
        total * delivered_fan_out,
        peak_rss as f64 / (1 << 20) as f64
    );
    let bytes = tallied_bytes(&destinations)?;
    let cost = cost::report(&knobs.prices, total, cpu_per_million, &bytes);
    println!(
        "cost per billion events: ${:.2} ({})",
        cost["dollars_per_billion_events"]["total"]
            .as_f64()
            .unwrap_or(0.0),
        bytes
            .iter()
            .map(|b| format!(
                "{} {:.0} B on the wire, {:.0} B billed per event",
                b.id,
                b.wire as f64 / total as f64,
                b.billed as f64 / total as f64
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(json!({
        "scenario": s.name,
        "event_bytes": events.bytes(),
        "events_per_record": s.per_record,
        "fan_out": fan_out,
        "one_destination_down": s.one_down,
        "destinations": ids,
        "partitions": partitions,
        "throughput": {
            "events": s.events,
            "seconds": secs,
            "events_per_sec": events_per_sec,
            "input_mib_per_sec": events_per_sec * events.bytes() as f64 / (1 << 20) as f64,
            "deliveries_per_sec": events_per_sec * fan_out as f64,
            "router_cpu_seconds": cpu1 - cpu0,
            "router_cpu_seconds_per_million_events": cpu_per_million,
            // The broker, the stand-ins and this harness, on the same cores.
            "harness_cpu_seconds": own1 - own0,
        },
        "latency": {
            "offered_events_per_sec": rate,
            "achieved_events_per_sec": achieved,
            "events": count,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "router_cpu_seconds_per_million_events": (cpu3 - cpu2) / count as f64 * 1e6,
            "router_cores": (cpu3 - cpu2) / latency_secs,
            "harness_cores": (own3 - own2) / latency_secs,
        },
        "router_peak_rss_mib": peak_rss as f64 / (1 << 20) as f64,
        "duplicates": duplicates,
        "requests": destinations.iter().map(|d| (d.id.clone(), json!({
            "requests": d.tally.requests.load(Relaxed),
            "body_bytes": d.tally.body_bytes.load(Relaxed),
            "decoded_bytes": d.tally.decoded_bytes.load(Relaxed),
            "records": d.tally.records.load(Relaxed),
            "record_bytes": d.tally.record_bytes.load(Relaxed),
            "record_billed_bytes": d.tally.record_billed_bytes.load(Relaxed),
        }))).collect::<serde_json::Map<_, _>>(),
        "cost": cost,
        "verified": true,
    }))
}

/// Each destination's bytes, after checking that the tallies add up: a broken count would
/// make a wrong bill. Bodies that came compressed decode to more than was sent; Firehose's
/// base64 takes 4 bytes on the wire for every 3 of data, and its billed bytes are whole
/// 5 KB units, at least the data.
fn tallied_bytes(destinations: &[Destination]) -> Result<Vec<cost::Bytes>, String> {
    let mut all = Vec::new();
    for d in destinations {
        let t = &d.tally;
        let (wire, decoded) = (t.body_bytes.load(Relaxed), t.decoded_bytes.load(Relaxed));
        let (requests, encoded) = (t.requests.load(Relaxed), t.encoded_requests.load(Relaxed));
        let (records, data, billed) = (
            t.records.load(Relaxed),
            t.record_bytes.load(Relaxed),
            t.record_billed_bytes.load(Relaxed),
        );
        let bad = |what: &str| Err(format!("{}: the byte tally is wrong: {what}", d.id));
        if requests > 0 && decoded == 0 {
            return bad("requests arrived but no decoded bytes were counted");
        }
        if encoded == requests && requests > 0 && decoded <= wire {
            return bad(&format!(
                "compressed bodies decoded to {decoded} bytes, not more than the {wire} sent"
            ));
        }
        if encoded == 0 && decoded != wire {
            return bad(&format!(
                "uncompressed bodies of {wire} bytes decoded to {decoded}"
            ));
        }
        let firehose = d.kind == cost::FIREHOSE;
        if firehose {
            let unit = standins::FIREHOSE_BILLING_UNIT;
            if records == 0 || billed < data || billed % unit != 0 || billed < records * unit {
                return bad(&format!(
                    "{records} records of {data} bytes billed as {billed} (unit {unit})"
                ));
            }
            if encoded == 0 && wire * 3 < data * 4 {
                return bad(&format!(
                    "{data} bytes of record data in {wire} bytes of base64 requests"
                ));
            }
        } else if records > 0 {
            return bad("records counted outside Firehose");
        }
        all.push(cost::Bytes {
            id: d.id.clone(),
            kind: d.kind,
            wire,
            ingested: if firehose { data } else { decoded },
            billed: if firehose { billed } else { decoded },
        });
    }
    Ok(all)
}

/// The config with `fetch.wait.max.ms = 10`. The mock cluster holds an empty Fetch for the
/// whole of that wait (librdkafka's default is 500 ms) even when records arrive meanwhile; a
/// Kafka broker answers as soon as they do. Without this the latency run would measure the
/// mock's wait, not the router.
fn with_short_fetch_wait(config: &str) -> String {
    const OPTION: &str = "\"fetch.wait.max.ms\" = \"10\"\n";
    match config.find("[kafka.options]\n") {
        Some(at) => {
            let at = at + "[kafka.options]\n".len();
            format!("{}{OPTION}{}", &config[..at], &config[at..])
        }
        None => format!("{config}\n[kafka.options]\n{OPTION}"),
    }
}

/// Starts a stand-in for each enabled connector and adds the overrides that point the router
/// at it (endpoint and credentials) to `env`. A disabled connector is still validated, so it
/// gets credentials but no stand-in.
/// One stand-in per enabled connector, in config order; with `first_down`, the first answers
/// 503 to every delivery and its connector detaches after a second.
async fn stand_ins(
    settings: &Settings,
    capacity: u64,
    first_down: bool,
    progress: &Arc<Progress>,
    env: &mut Vec<(String, String)>,
) -> Result<Vec<Destination>, String> {
    let mut destinations = Vec::new();
    for c in &settings.connectors {
        let key = |k: &str| format!("SWITCHYARD__CONNECTORS__{}__{k}", c.id.to_uppercase());
        let secret = format!("bench-secret-{}", destinations.len());
        let url = if c.enabled {
            let down = first_down && destinations.is_empty();
            if down {
                env.push((key("DETACH_AFTER_SECS"), "1".into()));
            }
            let tally = Arc::new(Tally::new(capacity, progress.clone()));
            let url = standins::start(&c.id, c.kind.wire(), &secret, down, tally.clone())
                .await
                .map_err(|e| format!("starting the stand-in for {}: {e}", c.id))?;
            destinations.push(Destination {
                id: c.id.clone(),
                kind: c.kind.kind(),
                tally,
            });
            url
        } else {
            "http://127.0.0.1:9".to_string()
        };
        for (k, value) in c.kind.stand_in_settings(&url, &secret) {
            env.push((key(&k.replace('.', "__").to_uppercase()), value));
        }
    }
    Ok(destinations)
}

async fn wait(progress: &Progress, target: u64) -> Result<(), String> {
    match tokio::time::timeout(PATIENCE, progress.reached(target)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "only {} of {target} deliveries arrived within {PATIENCE:?}: events were lost",
            progress.distinct.load(Relaxed)
        )),
    }
}

/// Every event reached exactly the destinations it named: all of them (fan-out to all), or
/// the one its template named (`seq % destinations`).
fn verify(destinations: &[Destination], fan_out: FanOut, total: u64) -> Result<(), String> {
    let n = destinations.len() as u64;
    for (k, d) in destinations.iter().enumerate() {
        for seq in 0..total {
            let meant = matches!(fan_out, FanOut::All) || seq % n == k as u64;
            match (meant, d.tally.has(seq)) {
                (true, false) => return Err(format!("event {seq} never reached {}", d.id)),
                (false, true) => {
                    return Err(format!(
                        "event {seq} reached {}, which it did not name",
                        d.id
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}

fn print_table(results: &[Value]) {
    println!(
        "\n{:<26} {:>6} {:>9} {:>10} {:>8} {:>11} {:>9} {:>8} {:>8}",
        "scenario",
        "bytes",
        "events",
        "events/s",
        "MiB/s",
        "CPU-s/M ev",
        "peak RSS",
        "p50 ms",
        "p99 ms"
    );
    for r in results {
        if let Some(e) = r.get("error") {
            println!("{:<26} INVALID: {e}", r["scenario"].as_str().unwrap_or(""));
            continue;
        }
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "{:<26} {:>6} {:>9} {:>10.0} {:>8.1} {:>11.1} {:>5.0} MiB {:>8.1} {:>8.1}",
            r["scenario"].as_str().unwrap_or(""),
            r["event_bytes"],
            r["throughput"]["events"],
            f(&r["throughput"]["events_per_sec"]),
            f(&r["throughput"]["input_mib_per_sec"]),
            f(&r["throughput"]["router_cpu_seconds_per_million_events"]),
            f(&r["router_peak_rss_mib"]),
            f(&r["latency"]["p50_ms"]),
            f(&r["latency"]["p99_ms"]),
        );
    }
    print_cost_table(results);
}

/// Per scenario, dollars per billion events by what they pay for, then each destination's
/// bytes per event: on the wire (egress), ingested (decoded) and billed (Firehose: rounded up
/// to 5 KB per record).
fn print_cost_table(results: &[Value]) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!(
        "\n$ per billion events     {:>10} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "CPU-s/M ev", "CPU", "egress", "Firehose", "ingest", "total"
    );
    for r in results.iter().filter(|r| r.get("error").is_none()) {
        let c = &r["cost"];
        let d = &c["dollars_per_billion_events"];
        println!(
            "{:<24} {:>10.1} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>9.2}",
            r["scenario"].as_str().unwrap_or(""),
            f(&c["router_cpu_seconds_per_million_events"]),
            f(&d["cpu"]),
            f(&d["egress"]),
            f(&d["firehose_ingestion"]),
            f(&d["destination_ingest"]),
            f(&d["total"]),
        );
        let Some(destinations) = c["destinations"].as_object() else {
            continue;
        };
        for (id, b) in destinations {
            let dollars = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
            println!(
                "  {:<30} wire {:>6.0} B/ev, ingested {:>6.0} B/ev, billed {:>6.0} B/ev; $ egress {:>6.2}, Firehose {:>6}, ingest {:>6}",
                id,
                f(&b["wire_bytes_per_event"]),
                f(&b["ingested_bytes_per_event"]),
                f(&b["billed_bytes_per_event"]),
                f(&b["egress_dollars_per_billion_events"]),
                dollars(&b["firehose_dollars_per_billion_events"]),
                dollars(&b["ingest_dollars_per_billion_events"]),
            );
        }
    }
}
