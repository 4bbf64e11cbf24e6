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
    /// A stand-in taken down for a while, to show a destination detach, drain and flow.
    pub outage: Option<Outage>,
}

/// `--outage ID:START:SECONDS`: the stand-in of connector `connector` answers 503 to
/// everything from `start` after the demo begins, for `length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    pub connector: String,
    pub start: Duration,
    pub length: Duration,
}

impl std::str::FromStr for Outage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.rsplitn(3, ':');
        let (Some(length), Some(start), Some(connector)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{s:?}: expected CONNECTOR:START_SECS:SECONDS"));
        };
        let secs = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|e| format!("{v:?} in {s:?}: {e}"))
        };
        Ok(Outage {
            connector: connector.to_string(),
            start: secs(start)?,
            length: secs(length)?,
        })
    }
}

/// How long the demo waits before detaching the destination it takes down.
const DEMO_DETACH_AFTER: Duration = Duration::from_secs(5);

/// The embedded broker keeps 5 MiB per partition (its retention, in effect), and parked
/// records spread unevenly: a minute of parking at the default rate needs this many for
/// none to be dropped before it is drained.
const PARKING_PARTITIONS: i32 = 96;

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
    if settings.parking.enabled {
        broker
            .create_topic(&settings.parking.topic, PARKING_PARTITIONS)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(o) = &opts.outage {
        let Some(c) = settings
            .connectors
            .iter_mut()
            .find(|c| c.enabled && c.id == o.connector)
        else {
            anyhow::bail!("--outage: no enabled connector {:?}", o.connector);
        };
        // The embedded broker keeps only 5 MiB per partition, a few seconds of input at the
        // demo's rate: waiting the default 30 s before detaching would let it drop records.
        c.isolation.detach_after = c.isolation.detach_after.min(DEMO_DETACH_AFTER);
    }
    settings.kafka.brokers = broker.bootstrap_servers().to_string();

    // Each stand-in lives in the closures that report how many events it received and take
    // it down (503 to everything) or up.
    let mut standins: Vec<Standin> = Vec::new();
    for c in settings.connectors.iter_mut().filter(|c| c.enabled) {
        let (count, down): (Count, Switch) = match &mut c.kind {
            Kind::SplunkHec(cfg) => {
                let fake = Arc::new(
                    FakeHec::builder(&exposed(&cfg.token))
                        .counting_only()
                        .start()
                        .await?,
                );
                cfg.endpoint = fake.url();
                let f = fake.clone();
                (
                    Box::new(move || fake.received_count()),
                    Box::new(move |down| f.fail_randomly(if down { 1000 } else { 0 })),
                )
            }
            Kind::DatadogLogs(cfg) => {
                let fake = Arc::new(
                    FakeDatadog::start_with(&exposed(&cfg.api_key), datadog::MAX_PAYLOAD, false)
                        .await?,
                );
                cfg.endpoint = Some(fake.url());
                let f = fake.clone();
                (
                    Box::new(move || fake.received_count()),
                    Box::new(move |down| f.fail_randomly(if down { 1000 } else { 0 })),
                )
            }
            Kind::KinesisFirehose(cfg) => {
                let fake = Arc::new(
                    FakeFirehose::start(&cfg.delivery_stream, "demo-access-key", false).await?,
                );
                cfg.endpoint = Some(fake.url());
                cfg.region = Some("us-east-1".into());
                cfg.role_arn = None;
                cfg.access_key_id = Some(switchyard_core::Secret::new("demo-access-key"));
                cfg.secret_access_key = Some(switchyard_core::Secret::new("demo-secret-key"));
                let f = fake.clone();
                (
                    Box::new(move || fake.received_count()),
                    Box::new(move |down| f.fail_randomly(if down { 1000 } else { 0 })),
                )
            }
            Kind::NewRelicEvents(cfg) => {
                let key = exposed(&cfg.license_key.clone().or(cfg.insert_key.clone()));
                let fake = Arc::new(FakeNewRelic::start_with(&cfg.account_id, &key, false).await?);
                cfg.endpoint = Some(fake.url());
                let f = fake.clone();
                (
                    Box::new(move || fake.received_count()),
                    Box::new(move |down| f.fail_randomly(if down { 1000 } else { 0 })),
                )
            }
        };
        standins.push(Standin {
            id: c.id.clone(),
            count,
            down,
        });
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
    let outage = async {
        match (
            &opts.outage,
            standins
                .iter()
                .find(|s| Some(&s.id) == opts.outage.as_ref().map(|o| &o.connector)),
        ) {
            (Some(o), Some(standin)) => {
                tokio::time::sleep(o.start).await;
                eprintln!(
                    "\ndemo: taking the stand-in for {} down for {} s",
                    o.connector,
                    o.length.as_secs()
                );
                (standin.down)(true);
                tokio::time::sleep(o.length).await;
                (standin.down)(false);
                eprintln!("\ndemo: the stand-in for {} is back", o.connector);
                std::future::pending::<()>().await;
            }
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = report(&pipeline, stop) => {}
        () = outage => {}
    }

    seeding.store(false, Ordering::SeqCst);
    let _ = seeder.join();
    let clean = pipeline.shutdown().await;
    for s in &standins {
        eprintln!("stand-in for {} received {} events", s.id, (s.count)());
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

/// A destination's stand-in, as the demo drives it.
struct Standin {
    id: String,
    count: Count,
    /// Down (503 to everything) or up.
    down: Switch,
}

/// How many events a stand-in received.
type Count = Box<dyn Fn() -> u64>;
/// Takes a stand-in down (true) or up.
type Switch = Box<dyn Fn(bool)>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_connector_start_and_length() {
        let o: Outage = "dz-connector-datadog:10:40".parse().unwrap();
        assert_eq!(
            o,
            Outage {
                connector: "dz-connector-datadog".into(),
                start: Duration::from_secs(10),
                length: Duration::from_secs(40),
            }
        );
        // Ids may hold colons; the two numbers are the last fields.
        let o: Outage = "a:b:1:2".parse().unwrap();
        assert_eq!(o.connector, "a:b");
        assert!("datadog:10".parse::<Outage>().is_err());
        assert!("datadog:ten:40".parse::<Outage>().is_err());
    }
}
