//! `switchyard demo`: the repo's `connectors.toml` run against an embedded Kafka-protocol
//! broker (librdkafka's mock cluster) seeded with generated QoE events, and local stand-ins
//! for the destinations. No accounts, no services.

use crate::pipeline::Pipeline;
use crate::progress;
use crate::settings::{ConnectorOverride, Settings};
use anyhow::Context as _;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use switchyard_destination::StandIn;
use switchyard_testkit::generate::CUSTOMERS;
use switchyard_testkit::{Broker, Generator};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events per second the generator offers.
    pub rate: u64,
    pub partitions: i32,
    /// One record in this many is not JSON, to show bad input being counted and skipped.
    pub malformed_every: u64,
    /// One record in this many is a JSON array of [`ARRAY_EVENTS`] events, the vendor's own
    /// payload shape (0: none).
    pub array_every: u64,
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

/// The share of sessions the demo's sampled connector takes.
const DEMO_SAMPLE_RATE: f64 = 0.5;

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
    let file = Settings::load(config, &demo_lookup)?;
    let (standins, mut overrides) = start_stand_ins(&file).await?;
    // One connector samples half the sessions, to show sampling: the last enabled one.
    let sampled = file.connectors.iter().rev().find(|c| c.enabled);
    if let Some(c) = sampled.filter(|c| c.filter.sample.is_none()) {
        overrides.push(ConnectorOverride {
            id: c.id.clone(),
            key: "sample_rate",
            value: DEMO_SAMPLE_RATE.into(),
        });
    }
    // The demo's own customers, unless the file names a tenant directory of its own.
    let tenants = match file.tenants.directory {
        None => Some(DemoTenants::start(&file).await?),
        Some(_) => None,
    };
    let mut settings = Settings::load_with_tenants(
        config,
        &demo_lookup,
        &overrides,
        tenants.as_ref().map(|t| t.dir.path()),
    )?;
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
        "switchyard demo: embedded broker {} | {} stand-in(s), and {} for {DEMO_TENANTS} customers' own destinations (the last with a broken credential) | offering {} events/s | {admin} | Ctrl-C to stop",
        broker.bootstrap_servers(),
        standins.len(),
        tenants.as_ref().map_or(0, |t| t.standins.len()),
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
                standin.stand_in.set_down(true);
                tokio::time::sleep(o.length).await;
                standin.stand_in.set_down(false);
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
    let source = pipeline.source_stats().clone();
    let monitor = pipeline.monitor();
    let clean = pipeline.shutdown().await;
    eprintln!(
        "read {} records, {} of them JSON arrays holding {} events",
        source.consumed.load(Ordering::Relaxed),
        source.array_records.load(Ordering::Relaxed),
        source.array_members.load(Ordering::Relaxed),
    );
    for (id, n) in monitor.sampled_out().into_iter().filter(|(_, n)| *n > 0) {
        eprintln!("{id} sampled out {n} events (sessions left out by sample_rate)");
    }
    for s in &standins {
        eprintln!(
            "stand-in for {} received {} events",
            s.id,
            s.stand_in.received()
        );
    }
    for t in tenants.iter().flat_map(|t| &t.standins) {
        eprintln!(
            "stand-in for {} of customer {}{} received {} events",
            t.id,
            t.customer,
            if t.broken { " (broken credential)" } else { "" },
            t.stand_in.received()
        );
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

/// A connector's stand-in, as the demo drives it.
struct Standin {
    id: String,
    stand_in: StandIn,
}

/// Starts a stand-in for each enabled connector, from its kind's crate, and the overrides that
/// point the connector at it with a credential the stand-in checks.
async fn start_stand_ins(
    settings: &Settings,
) -> anyhow::Result<(Vec<Standin>, Vec<ConnectorOverride>)> {
    let mut standins = Vec::new();
    let mut overrides = Vec::new();
    for (n, c) in settings.connectors.iter().filter(|c| c.enabled).enumerate() {
        let credential = format!("demo-credential-{n}");
        let stand_in = c
            .kind
            .start_stand_in(&credential)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("starting the stand-in for {}", c.id))?;
        overrides.extend(
            c.kind
                .stand_in_settings(&stand_in.url, &credential)
                .into_iter()
                .map(|(key, value)| ConnectorOverride {
                    id: c.id.clone(),
                    key,
                    value: value.into(),
                }),
        );
        standins.push(Standin {
            id: c.id.clone(),
            stand_in,
        });
    }
    Ok((standins, overrides))
}

/// Customers with their own destinations (docs/tenancy.md): a tenant directory written to a
/// temporary folder, and for each customer a stand-in per connector expecting its own
/// credential. The last customer's files name a credential its stand-ins do not accept, so
/// its events are refused (dead-lettered) while the others' flow.
struct DemoTenants {
    dir: TempDir,
    standins: Vec<TenantStandin>,
}

struct TenantStandin {
    customer: &'static str,
    id: String,
    broken: bool,
    stand_in: StandIn,
}

/// The demo's customers with a file of their own; the generator's other customers get each
/// connector's own instance.
const DEMO_TENANTS: usize = 3;

impl DemoTenants {
    async fn start(settings: &Settings) -> anyhow::Result<DemoTenants> {
        let dir = TempDir::new("switchyard-demo-tenants")?;
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets)?;
        let mut standins = Vec::new();
        for (n, customer) in CUSTOMERS.iter().take(DEMO_TENANTS).enumerate() {
            let broken = n + 1 == DEMO_TENANTS;
            let mut file = String::new();
            for c in settings.connectors.iter().filter(|c| c.enabled) {
                let credential = format!("{customer}-credential-for-{}", c.id);
                let expected = if broken {
                    format!("{credential}-rotated")
                } else {
                    credential.clone()
                };
                let stand_in = c
                    .kind
                    .start_stand_in(&expected)
                    .await
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("starting {customer}'s stand-in for {}", c.id))?;
                let secret_keys =
                    crate::destinations::find(c.kind.kind()).map_or(&[][..], |d| d.secret_keys);
                file.push_str(&format!("[connectors.{}]\n", c.id));
                for (key, value) in c.kind.stand_in_settings(&stand_in.url, &credential) {
                    let secret = secret_keys
                        .iter()
                        .any(|s| key == *s || key.starts_with(&format!("{s}.")));
                    let value = if secret {
                        // As a Secret mounted beside the ConfigMap would hold it.
                        let path = secrets.join(format!("{customer}-{}-{key}", c.id));
                        std::fs::write(&path, &value)?;
                        format!("\"${{file:{}}}\"", path.display())
                    } else {
                        serde_json::Value::from(value).to_string()
                    };
                    file.push_str(&format!("{key} = {value}\n"));
                }
                standins.push(TenantStandin {
                    customer,
                    id: c.id.clone(),
                    broken,
                    stand_in,
                });
            }
            std::fs::write(dir.path().join(format!("{customer}.toml")), file)?;
        }
        Ok(DemoTenants { dir, standins })
    }
}

/// A folder under the system's temporary one, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> std::io::Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

/// Events in each array record of the demo.
pub const ARRAY_EVENTS: usize = 10;

/// Produces generated records at about `opts.rate` per second until `seeding` is cleared.
fn seed(bootstrap: &str, topic: &str, lists: &[String], opts: &DemoOptions, seeding: &AtomicBool) {
    let lists: Vec<&str> = lists.iter().map(String::as_str).collect();
    let mut generator = Generator::new("demo", 7).connector_lists(&lists);
    let mut n = 0u64;
    let next = || {
        n += 1;
        if opts.malformed_every > 0 && n.is_multiple_of(opts.malformed_every) {
            b"{\"event\": not json".to_vec()
        } else if opts.array_every > 0 && n.is_multiple_of(opts.array_every) {
            let members: Vec<Vec<u8>> = (0..ARRAY_EVENTS)
                .map(|_| generator.next_event().1)
                .collect();
            [b"[".to_vec(), members.join(&b","[..]), b"]".to_vec()].concat()
        } else {
            generator.next_event().1
        }
    };
    if let Err(e) =
        switchyard_testkit::broker::produce_paced(bootstrap, topic, opts.rate, seeding, next)
    {
        tracing::error!(error = %e, "demo producer stopped");
    }
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
