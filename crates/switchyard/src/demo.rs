//! `switchyard demo`: the repo's `connectors.toml` run against an embedded Kafka-protocol
//! broker (librdkafka's mock cluster) seeded with generated QoE events, and local stand-ins
//! for the destinations. No accounts, no services.

use crate::pipeline::Pipeline;
use crate::progress;
use crate::settings::{Kind, Settings};
use anyhow::Context as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use switchyard_testkit::{
    Broker, FakeDatadog, FakeFirehose, FakeHec, FakeNewRelic, Generator, datadog,
};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events per second the generator offers.
    pub rate: u64,
    pub partitions: i32,
    /// One record in this many is not JSON, to show bad input being counted and skipped.
    pub malformed_every: u64,
}

/// A `${NAME}` that is not set gets a demo value, so the real config file works as is
/// (numeric for account ids, which New Relic requires to be numbers).
fn demo_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| {
        Some(if name.ends_with("ACCOUNT_ID") {
            "1000001".to_string()
        } else {
            format!("demo-{}", name.to_ascii_lowercase())
        })
    })
}

pub async fn run(
    config: &str,
    opts: DemoOptions,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut settings = Settings::load(config, &demo_lookup)?;
    let broker = Broker::mock()
        .map_err(anyhow::Error::msg)
        .context("starting the embedded broker")?;
    for topic in &settings.kafka.topics {
        broker
            .create_topic(topic, opts.partitions)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(dlq) = &settings.dead_letter.topic {
        broker.create_topic(dlq, 1).map_err(anyhow::Error::msg)?;
    }
    settings.kafka.brokers = broker.bootstrap_servers().to_string();

    // Each stand-in lives in the closure that reports how many events it received.
    let mut standins: Vec<(String, Box<dyn Fn() -> u64>)> = Vec::new();
    for c in settings.connectors.iter_mut().filter(|c| c.enabled) {
        let count: Box<dyn Fn() -> u64> = match &mut c.kind {
            Kind::SplunkHec(cfg) => {
                let fake = FakeHec::builder(&exposed(&cfg.token))
                    .counting_only()
                    .start()
                    .await?;
                cfg.endpoint = fake.url();
                Box::new(move || fake.received_count())
            }
            Kind::DatadogLogs(cfg) => {
                let fake =
                    FakeDatadog::start_with(&exposed(&cfg.api_key), datadog::MAX_PAYLOAD, false)
                        .await?;
                cfg.endpoint = Some(fake.url());
                Box::new(move || fake.received_count())
            }
            Kind::KinesisFirehose(cfg) => {
                let fake =
                    FakeFirehose::start(&cfg.delivery_stream, "demo-access-key", false).await?;
                cfg.endpoint = Some(fake.url());
                cfg.region = Some("us-east-1".into());
                cfg.role_arn = None;
                cfg.access_key_id = Some(switchyard_core::Secret::new("demo-access-key"));
                cfg.secret_access_key = Some(switchyard_core::Secret::new("demo-secret-key"));
                Box::new(move || fake.received_count())
            }
            Kind::NewRelicEvents(cfg) => {
                let key = exposed(&cfg.license_key.clone().or(cfg.insert_key.clone()));
                let fake = FakeNewRelic::start_with(&cfg.account_id, &key, false).await?;
                cfg.endpoint = Some(fake.url());
                Box::new(move || fake.received_count())
            }
        };
        standins.push((c.id.clone(), count));
    }
    let ids: Vec<&str> = settings.connectors.iter().map(|c| c.id.as_str()).collect();
    let mut lists: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    lists.push(ids.join(","));
    // The sample's own list: it names connectors this config may not have (Firehose).
    lists.push("dz-connector-splunk,dz-connector-kinesis-firehose,dz-connector-datadog".into());
    // An id no config has: counted per id and logged at most once a minute.
    lists.push("dz-connector-splunk,dz-connector-bigquery".into());

    let seeding = Arc::new(AtomicBool::new(true));
    let seeder = {
        let (bootstrap, topic, seeding) = (
            broker.bootstrap_servers().to_string(),
            settings.kafka.topics[0].clone(),
            seeding.clone(),
        );
        let opts = opts.clone();
        std::thread::spawn(move || seed(&bootstrap, &topic, &lists, &opts, &seeding))
    };

    crate::admin::prometheus();
    let pipeline = Pipeline::start(&settings).await?;
    // On loopback, whatever the config says: the demo is for this machine only.
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], settings.admin.bind.port()));
    let admin = match crate::admin::serve(bind, pipeline.monitor()).await {
        Ok((addr, _)) => format!("http://{addr}/metrics"),
        Err(e) => format!("admin server not started ({e})"),
    };
    eprintln!(
        "switchyard demo: embedded broker {} | {} stand-in(s) | offering {} events/s | {admin} | Ctrl-C to stop",
        broker.bootstrap_servers(),
        standins.len(),
        opts.rate
    );
    report(&pipeline, stop).await;

    seeding.store(false, Ordering::SeqCst);
    let _ = seeder.join();
    let clean = pipeline.shutdown().await;
    for (id, count) in &standins {
        eprintln!("stand-in for {id} received {} events", count());
    }
    eprintln!(
        "stopped {}",
        if clean {
            "cleanly: every delivery settled and committed"
        } else {
            "with deliveries unsettled (they will be redelivered)"
        }
    );
    Ok(())
}

/// The secret's value, for configuring the stand-in that checks it.
fn exposed(secret: &Option<switchyard_core::Secret>) -> String {
    secret
        .as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default()
}

/// Prints the progress line every second, in place on a terminal, until `stop` resolves.
async fn report(pipeline: &Pipeline, stop: impl Future<Output = ()>) {
    let tty = std::io::stdout().is_terminal();
    progress::report_until(pipeline, Duration::from_secs(1), stop, |line| {
        let mut out = std::io::stdout().lock();
        let _ = if tty {
            write!(out, "\r\x1b[2K{line}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = out.flush();
    })
    .await;
    if tty {
        println!();
    }
}

/// Produces generated events at about `opts.rate` per second until `seeding` is cleared.
fn seed(bootstrap: &str, topic: &str, lists: &[String], opts: &DemoOptions, seeding: &AtomicBool) {
    let producer: BaseProducer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "demo producer could not start");
            return;
        }
    };
    let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
    let mut generator = Generator::new("demo", 7).connector_lists(&lists);
    let tick = Duration::from_millis(20);
    let per_tick = (opts.rate / 50).max(1);
    let mut n = 0u64;
    let start = Instant::now();
    while seeding.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            n += 1;
            let payload = if opts.malformed_every > 0 && n.is_multiple_of(opts.malformed_every) {
                b"{\"event\": not json".to_vec()
            } else {
                generator.next_event().1
            };
            if producer
                .send(BaseRecord::<(), _>::to(topic).payload(&payload))
                .is_err()
            {
                producer.poll(Duration::from_millis(50));
            }
        }
        producer.poll(Duration::ZERO);
        // Pace to the offered rate: sleep until this tick's slot.
        let due = start + tick.mul_f64((n / per_tick) as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let _ = producer.flush(Duration::from_secs(5));
}
