//! Tenancy at scale (docs/tenancy.md): 1,000 customers, each with its own instance of four
//! connectors (Splunk HEC, Datadog, New Relic, Firehose). It measures the memory of the
//! configured instances before any runs, of each running instance, what closing idle ones
//! gives back, and the dispatcher's CPU per event with tenants against the same connectors
//! without. `make bench-tenants` runs it; it prints numbers and asserts nothing. Under
//! `cargo test --all-targets` it runs once with ten customers.
//!
//! The instances are built and routed to exactly as the pipeline does it; the destinations
//! are an address that refuses connections, and each instance gives up after one attempt,
//! so that what is measured is switchyard's own cost, not a destination's.

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::Settings;
use switchyard::tenancy::{Kit, Tenanted};
use switchyard_core::record::Limits;
use switchyard_core::{
    Acker, ConnectorIndex, Dispatcher, Origin, PartitionId, Reach, Route, Router, SourceStats,
    TimingRecorder, Wiring,
};
use switchyard_testkit::Generator;

const LIMITS: Limits = Limits {
    max_bytes: 1 << 20,
    max_members: 1_000,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IDS: [&str; 4] = ["hec", "dd", "nr", "fh"];

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let customers = if full { 1000 } else { 10 };
    let events = if full { 20_000 } else { 100 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(customers, events, full));
}

/// `connectors.toml` for the four connectors, pointed nowhere; `tenants` names a directory.
fn config(tenants: Option<&std::path::Path>) -> String {
    let common = "health_check = { enabled = false }\nendpoint = \"http://127.0.0.1:9\"\n\
                  retry = { max_attempts = 1, on_exhausted = \"dead_letter\" }\n\
                  batch = { max_linger_ms = 600000 }\n";
    let mut text =
        String::from("[kafka]\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n");
    if let Some(dir) = tenants {
        text.push_str(&format!("[tenants]\ndirectory = \"{}\"\n", dir.display()));
    }
    text.push_str(&format!(
        "[connectors.hec]\nkind = \"splunk_hec\"\ntoken = \"${{T}}\"\n{common}\
         [connectors.dd]\nkind = \"datadog_logs\"\napi_key = \"${{T}}\"\n{common}\
         [connectors.nr]\nkind = \"newrelic_events\"\naccount_id = \"1\"\nlicense_key = \"${{T}}\"\n{common}\
         [connectors.fh]\nkind = \"kinesis_firehose\"\ndelivery_stream = \"s\"\nregion = \"us-east-1\"\n\
         access_key_id = \"${{T}}\"\nsecret_access_key = \"${{T}}\"\n{common}"
    ));
    text
}

/// One tenant file: every connector with the customer's own credential and a field of its
/// own, as a real customer's would be.
fn tenant_file(customer: &str) -> String {
    format!(
        "[connectors.hec]\ntoken = \"${{T_{customer}}}\"\nindex = \"idx_{customer}\"\n\
         [connectors.dd]\napi_key = \"${{T_{customer}}}\"\ntags = [\"customer:{customer}\"]\n\
         [connectors.nr]\nlicense_key = \"${{T_{customer}}}\"\n\
         [connectors.fh]\ndelivery_stream = \"stream-{customer}\"\naccess_key_id = \"${{T_{customer}}}\"\n\
         secret_access_key = \"${{T_{customer}}}\"\n"
    )
}

fn lookup(name: &str) -> Option<String> {
    Some(format!("credential-{name}"))
}

/// The process's resident memory, bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A dispatcher over `settings`' connectors, as the pipeline builds it (with per-customer
/// instances when `settings` has tenants), and the tenanted connectors.
async fn dispatcher(settings: &Settings) -> (Dispatcher, Vec<Tenanted>, Arc<Acker>) {
    let acker = Arc::new(Acker::new());
    acker.lock().assign(PartitionId(0));
    let tenants = settings.tenants.directory.is_some();
    let routes = settings
        .connectors
        .iter()
        .map(|c| Route {
            id: c.id.clone(),
            enabled: true,
            filter: Default::default(),
        })
        .collect();
    let router = Arc::new(Router::new(routes, &[]));
    let kit = Kit {
        runtime: tokio::runtime::Handle::current(),
        acker: acker.clone(),
        timings: TimingRecorder::new(16),
        dead_letters: None,
        role_of: Arc::new(|_, _| None),
    };
    let mut reach = Vec::new();
    let mut tenanted = Vec::new();
    for (i, c) in settings.connectors.iter().enumerate() {
        let index = ConnectorIndex(i as u8);
        if tenants {
            let t = Tenanted::start(c, settings, index, kit.clone());
            reach.push(Some(t.reach()));
            tenanted.push(t);
        } else {
            let wiring = Wiring {
                acker: acker.clone(),
                timings: kit.timings.clone(),
                dead_letters: None,
                isolation: None,
                stats: None,
            };
            let handle = c
                .kind
                .spawn(&c.id, index, &c.client, c.engine.clone(), wiring)
                .await
                .expect("connector");
            reach.push(Some(Reach::One(handle)));
        }
    }
    let stats = Arc::new(SourceStats::default());
    let d = Dispatcher::new(router, reach, acker.clone(), stats, LIMITS, None);
    (d, tenanted, acker)
}

/// Events of `customers` in turn, each naming every connector.
fn events(customers: &[String], n: usize) -> Vec<Bytes> {
    let mut g = Generator::new("tenants", 5).connector_lists(&["hec,dd,nr,fh"]);
    (0..n)
        .map(|i| {
            let mut e: serde_json::Value =
                serde_json::from_slice(&g.next_event().1).expect("event");
            e["customer_code"] = customers[i % customers.len()].as_str().into();
            Bytes::from(serde_json::to_vec(&e).expect("json"))
        })
        .collect()
}

/// Feeds `events` to `d` from offset `from`; returns the calling thread's CPU per event.
fn feed(d: &Dispatcher, events: &[Bytes], from: i64) -> Duration {
    let topic: Arc<str> = Arc::from("t");
    let start = thread_cpu();
    for (i, raw) in events.iter().enumerate() {
        let origin = Origin {
            partition: PartitionId(0),
            topic: topic.clone(),
            kafka_partition: 0,
            offset: from + i as i64,
            member: None,
        };
        d.accept(raw.clone(), None, origin);
    }
    (thread_cpu() - start) / events.len().max(1) as u32
}

async fn run(n: usize, m: usize, full: bool) {
    // Time for the Firehose instances' async credential chains and for closing workers to
    // end, before memory is read; a smoke run reads no figure worth waiting for.
    let settle = Duration::from_secs(if full { 2 } else { 0 });
    let dir = std::env::temp_dir().join(format!("switchyard-bench-tenants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tenant directory");
    let customers: Vec<String> = (0..n).map(|i| format!("t{i:04}")).collect();
    for c in &customers {
        std::fs::write(dir.join(format!("{c}.toml")), tenant_file(c)).expect("tenant file");
    }
    let instances = n * IDS.len();
    let firsts = events(&customers, n);
    let stream = events(&customers, m);

    // Without tenants: the same four connectors, one instance each.
    let plain = Settings::from_toml(&config(None), &lookup, false).expect("settings");
    let (d, _, _) = dispatcher(&plain).await;
    let _ = feed(&d, &firsts, 0);
    let plain_cpu = feed(&d, &stream, n as i64);
    drop(d.close());

    // With [tenants] but no customer files: every event to each connector's own instance,
    // through the per-customer table (what a reload-capable single-tenant path would cost).
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).expect("empty tenant directory");
    let shared_only = Settings::from_toml(&config(Some(&empty)), &lookup, false).expect("settings");
    let (d, _, _) = dispatcher(&shared_only).await;
    let _ = feed(&d, &firsts, 0);
    let shared_cpu = feed(&d, &stream, n as i64);
    drop(d.close());

    let before = rss();
    let t = Instant::now();
    let settings = Settings::from_toml(&config(Some(&dir)), &lookup, false).expect("settings");
    let load = t.elapsed();
    let (d, tenanted, _) = dispatcher(&settings).await;
    let configured = rss();
    // Every customer's first event starts its four instances.
    let _ = feed(&d, &firsts, 0);
    let running = tenanted
        .iter()
        .map(|t| t.connector.customers_running())
        .sum::<usize>();
    tokio::time::sleep(settle).await;
    let active = rss();
    let tenant_cpu = feed(&d, &stream, n as i64);
    let t = Instant::now();
    let closed: usize = tenanted
        .iter()
        .map(|t| t.connector.close_idle(Duration::ZERO))
        .sum();
    let closing = t.elapsed();
    tokio::time::sleep(settle).await;
    let after = rss();
    drop(d.close());
    let _ = std::fs::remove_dir_all(&dir);

    let per = |bytes: usize| bytes as f64 / instances as f64 / 1024.0;
    println!(
        "tenants: {n} customers x {} connectors = {instances} instances",
        IDS.len()
    );
    println!(
        "  loading the tenant directory          {:>8.0} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "  configured, none running (idle)       {:>8.1} KiB per instance",
        per(configured.saturating_sub(before))
    );
    println!(
        "  running (one event each, queued)      {:>8.1} KiB per instance ({running} running)",
        per(active.saturating_sub(configured))
    );
    println!(
        "  after closing the idle ones           {:>8.1} KiB per instance given back ({closed} closed in {:.0} ms)",
        per(active.saturating_sub(after)),
        closing.as_secs_f64() * 1e3
    );
    println!(
        "  dispatch CPU per event, 4 connectors  {:>8} ns through the per-customer table with no customer files",
        shared_cpu.as_nanos()
    );
    println!(
        "  dispatch CPU per event, 4 connectors  {:>8} ns without tenants, {} ns with ({} ns routing cost)",
        plain_cpu.as_nanos(),
        tenant_cpu.as_nanos(),
        tenant_cpu.as_nanos() as i128 - plain_cpu.as_nanos() as i128
    );
}
