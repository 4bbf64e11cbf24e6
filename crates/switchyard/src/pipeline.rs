//! Wiring: settings → connector workers → dispatcher → Kafka source.

use crate::settings::ConnectorSettings;
use crate::settings::Settings;
use crate::tenancy::{Isolations, Kit, RoleOf, Tenanted};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::record::Limits;
use switchyard_core::stats::ConnectorSnapshot;
use switchyard_core::stats::Health;
use switchyard_core::{
    Acker, ConnectorHandle, ConnectorStats, Dispatcher, Heartbeat, Isolation, Role, Route, Router,
    SourceStats, State, TimingRecorder,
};
use switchyard_core::{DeadLetters, Filter, PerCustomer, Reach, Wiring};
use switchyard_kafka::letters::headers;
use switchyard_kafka::{LetterProducer, Purpose, Source, SourceError, Status, StatusHandle};

/// A running router: the main flow from the source topics, and per connector the drain of
/// its parked events (docs/isolation.md).
pub struct Pipeline {
    main: Flow,
    drains: Vec<Flow>,
    /// Moves draining destinations back to flowing once their backlog is delivered.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Closes idle customers' instances.
    reaper: Option<tokio::task::JoinHandle<()>>,
    monitor: Monitor,
    shutdown_timeout: Duration,
    /// The settings in force: what a reload compares against.
    settings: std::sync::Mutex<Settings>,
    /// Every instance's isolation.
    isolations: Arc<Isolations>,
}

/// One consumer group and the connector workers it feeds.
struct Flow {
    source: Source,
    acker: Arc<Acker>,
    timings: Arc<TimingRecorder>,
    router: Arc<Router>,
    stats: Arc<SourceStats>,
    /// Every connector's counters, by id.
    connectors: Vec<(Arc<str>, Arc<ConnectorStats>)>,
    /// The connectors with per-customer instances (all of them, with tenants), for reloads.
    tenanted: Vec<Tenanted>,
}

/// What observers (the admin server, the progress line, tests) read of a pipeline. Cheap to
/// clone, and readable after the pipeline has stopped.
#[derive(Clone)]
pub struct Monitor {
    router: Arc<Router>,
    stats: Arc<SourceStats>,
    connectors: Vec<(Arc<str>, Arc<ConnectorStats>)>,
    /// The main flow's connectors with per-customer instances.
    tenanted: Vec<Arc<PerCustomer>>,
    /// Every instance's isolation.
    isolations: Arc<Isolations>,
    isolated: Vec<Isolated>,
    status: StatusHandle,
    /// Each consumer's poll loop, by the name liveness reports it under.
    loops: Vec<(String, Arc<Heartbeat>)>,
    stall_after: Duration,
    /// The main flow's offsets: what is unfinished, in events and payload bytes.
    acker: Arc<Acker>,
}

/// The label of the customers past `tenants.metrics_label_limit`.
pub const OTHER_CUSTOMERS: &str = "_other";

/// One customer's series of one connector.
#[derive(Debug, Clone)]
pub struct CustomerSeries {
    pub connector: Arc<str>,
    pub customer: Arc<str>,
    pub routed: u64,
    /// Its instance's isolation state, when the instance parks (parking is on).
    pub state: Option<State>,
}

/// A connector's isolation state and its drain's counters.
#[derive(Clone)]
pub struct Isolated {
    pub id: Arc<str>,
    pub isolation: Arc<Isolation>,
    /// The drain's own worker: what it delivered of the parked events.
    pub drain: Arc<ConnectorStats>,
}

/// One destination's isolation at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationSnapshot {
    pub id: String,
    pub state: State,
    /// Events written to the parking topic by this replica, since start.
    pub parked: u64,
    /// Parked events this replica's drain delivered, since start.
    pub drained: u64,
    /// Age of the oldest event parked since the backlog was last empty.
    pub oldest_parked_age_secs: u64,
}

impl Monitor {
    pub fn progress(&self) -> Progress {
        use std::sync::atomic::Ordering::Relaxed;
        let now = switchyard_core::timings::now_ms();
        Progress {
            consumed: self.stats.consumed.load(Relaxed),
            malformed: self.stats.malformed_total(),
            unrouted: self.stats.unrouted.load(Relaxed),
            paused_partitions: self.stats.paused_partitions.load(Relaxed),
            pauses: self.stats.pauses.load(Relaxed),
            overloads: self.stats.overload_waits.load(Relaxed),
            unknown_connectors: self.router.unknown_counts(),
            connectors: self
                .connectors
                .iter()
                .map(|(id, s)| (id.to_string(), s.snapshot()))
                .collect(),
            isolation: self
                .isolated
                .iter()
                .map(|i| IsolationSnapshot {
                    id: i.id.to_string(),
                    state: i.isolation.state(),
                    parked: i.isolation.parked(),
                    drained: i.drain.snapshot().delivered,
                    oldest_parked_age_secs: i.isolation.oldest_parked_age_secs(now),
                })
                .collect(),
        }
    }

    pub fn source_stats(&self) -> &Arc<SourceStats> {
        &self.stats
    }

    /// Per labelled customer of each connector (`tenants.metrics_label_limit`): events routed
    /// to its instance and that instance's isolation state; then each connector's other
    /// customers' events together, under the customer `_other`.
    pub fn customer_series(&self) -> Vec<CustomerSeries> {
        let mut out = Vec::new();
        for c in &self.tenanted {
            let (labelled, others) = c.routed_by_customer();
            for (customer, routed) in labelled {
                out.push(CustomerSeries {
                    state: self.isolations.state(c.id(), Some(&customer)),
                    connector: c.id().clone(),
                    customer,
                    routed,
                });
            }
            if others > 0 {
                out.push(CustomerSeries {
                    connector: c.id().clone(),
                    customer: Arc::from(OTHER_CUSTOMERS),
                    routed: others,
                    state: None,
                });
            }
        }
        out
    }

    /// Per connector with per-customer instances: how many customers' instances run now.
    pub fn customer_instances(&self) -> Vec<(Arc<str>, usize)> {
        self.tenanted
            .iter()
            .map(|c| (c.id().clone(), c.customers_running()))
            .collect()
    }

    pub fn connectors(&self) -> &[(Arc<str>, Arc<ConnectorStats>)] {
        &self.connectors
    }

    /// Events each connector sampled out: the router's count (the connector's own
    /// `sample_rate`) and its customers' instances' (a tenant file's).
    pub fn sampled_out(&self) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let by_router: HashMap<String, u64> =
            self.router.sampled_out_counts().into_iter().collect();
        self.connectors
            .iter()
            .map(|(id, s)| {
                let routed = by_router.get(id.as_ref()).copied().unwrap_or(0);
                (id.to_string(), routed + s.sampled_out.load(Relaxed))
            })
            .collect()
    }

    pub fn source_status(&self) -> Status {
        self.status.status()
    }

    /// Live while every consumer's poll loop (the main flow's and each drain's) has turned
    /// within `admin.stall_after_secs`; otherwise the loops that have not, one line each. A
    /// destination that is down does not make the router dead: a restart would not bring it
    /// back, and the poll loop keeps turning while partitions are paused or parked. The
    /// handler answering at all shows the async runtime is serving (docs/health.md).
    pub fn liveness(&self) -> Result<(), Vec<String>> {
        let stalled: Vec<String> = self
            .loops
            .iter()
            .filter_map(|(name, beat)| {
                let silent = beat.silent_for();
                (silent > self.stall_after).then(|| {
                    format!(
                        "{name}: poll loop has not turned for {} s (limit {} s)",
                        silent.as_secs(),
                        self.stall_after.as_secs()
                    )
                })
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled)
        }
    }

    /// Unfinished offsets of the main flow and their payload bytes: what
    /// `max_inflight_events` and `max_inflight_bytes` bound.
    pub fn unfinished(&self) -> (usize, usize) {
        let t = self.acker.lock();
        (t.total_unfinished(), t.unfinished_bytes())
    }

    /// Ready when the consumer has joined its group and every enabled connector passed its
    /// health check; otherwise what is missing, one line each. A detached or draining
    /// destination does not count: restarting the pod would not bring it back, and its events
    /// are safe in the parking topic.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        if self.status.status().rebalances == 0 {
            missing.push("kafka: consumer has not joined its group yet".to_string());
        }
        for (id, stats) in &self.connectors {
            let detached = self
                .isolated
                .iter()
                .any(|i| i.id == *id && i.isolation.is_parking());
            match stats.health() {
                _ if detached => {}
                Health::Healthy | Health::Unchecked => {}
                Health::Pending => missing.push(format!("{id}: health check pending")),
                Health::Failing(e) => missing.push(format!("{id}: {e}")),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connector {id}: {message}")]
    Connector { id: String, message: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("dead-letter or parking producer: {0}")]
    DeadLetter(#[from] switchyard_kafka::KafkaError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Running instances closed because their settings changed or went away.
    pub replaced: usize,
    /// The sections that changed but apply only at the next start.
    pub need_restart: Vec<String>,
}

/// The sections of `new` that differ from `old` and cannot change while running: the Kafka
/// consumer and producers, the router's limits, the admin server, the tenant directory's
/// place, and which connectors exist (their routing indices).
fn needs_restart(old: &Settings, new: &Settings) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_string());
        }
    };
    // Debug output redacts secrets: a changed Kafka password alone goes unnoticed here, and
    // applies at the next start like the rest of [kafka].
    check(
        "kafka",
        format!("{:?}", old.kafka) != format!("{:?}", new.kafka),
    );
    check(
        "router",
        format!("{:?}", old.router) != format!("{:?}", new.router),
    );
    check(
        "admin",
        format!("{:?}", old.admin) != format!("{:?}", new.admin),
    );
    check(
        "dead_letter",
        format!("{:?}", old.dead_letter) != format!("{:?}", new.dead_letter),
    );
    check(
        "parking",
        format!("{:?}", old.parking) != format!("{:?}", new.parking),
    );
    check(
        "tenants.directory, idle_after_secs or metrics_label_limit",
        old.tenants.directory != new.tenants.directory
            || old.tenants.idle_after != new.tenants.idle_after
            || old.tenants.metrics_label_limit != new.tenants.metrics_label_limit,
    );
    let kinds = |s: &Settings| -> Vec<(String, &'static str)> {
        s.connectors
            .iter()
            .map(|c| (c.id.clone(), c.kind.kind()))
            .collect()
    };
    check(
        "the list of connectors (ids and kinds)",
        kinds(old) != kinds(new),
    );
    changed
}

/// Whether every connector's settings are the same.
fn same_connectors(old: &Settings, new: &Settings) -> bool {
    old.connectors.len() == new.connectors.len()
        && old
            .connectors
            .iter()
            .zip(&new.connectors)
            .all(|(a, b)| a.id == b.id && a.fingerprint == b.fingerprint && a.enabled == b.enabled)
}

/// Counters at one moment, for the progress line and tests.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub consumed: u64,
    pub malformed: u64,
    pub unrouted: u64,
    pub paused_partitions: u64,
    /// Times a partition was paused for backpressure, since start.
    pub pauses: u64,
    /// Times the router was over `max_inflight_events` and waited for deliveries, since start.
    pub overloads: u64,
    pub unknown_connectors: Vec<(String, u64)>,
    pub connectors: Vec<(String, ConnectorSnapshot)>,
    pub isolation: Vec<IsolationSnapshot>,
}

/// How often a draining destination's backlog is checked.
const WATCH_EVERY: Duration = Duration::from_millis(500);

impl Pipeline {
    /// Starts every enabled connector and joins the consumer group, and with parking on, the
    /// drain of each connector's parked events. The workers run on the calling tokio runtime.
    pub async fn start(settings: &Settings) -> Result<Pipeline, StartError> {
        let isolations = Arc::new(Isolations::default());
        // The connectors that park: every enabled one, and with tenants every one, since a
        // customer may enable a connector that is off by default.
        let parked: Vec<&ConnectorSettings> = if settings.parking.enabled {
            settings
                .connectors
                .iter()
                .filter(|c| c.enabled || tenancy_on(settings))
                .collect()
        } else {
            Vec::new()
        };
        let parking: Option<Arc<dyn DeadLetters>> = if settings.parking.enabled {
            Some(Arc::new(LetterProducer::new(
                &settings.kafka.brokers,
                &settings.parking.topic,
                Purpose::Parking,
                &[&settings.kafka.options, &settings.parking.options],
            )?))
        } else {
            None
        };
        let role_of: RoleOf = {
            let (isolations, parking) = (isolations.clone(), parking.clone());
            let connectors = settings.connectors.clone();
            Arc::new(move |id: &str, customer: Option<&str>| {
                let c = connectors.iter().find(|c| c.id == id)?;
                Some(Role::Main {
                    isolation: isolations.of(c, customer),
                    parking: parking.clone()?,
                })
            })
        };
        let main = Flow::start(settings, role_of).await?;
        let mut drains = Vec::new();
        let mut isolated = Vec::new();
        let mut loops = vec![("kafka".to_string(), main.source.heartbeat())];
        for c in &parked {
            let drain_settings = drain_settings(settings, &c.id);
            let role_of: RoleOf = {
                let (isolations, c) = (isolations.clone(), (*c).clone());
                Arc::new(move |_: &str, customer: Option<&str>| {
                    Some(Role::Drain(isolations.of(&c, customer)))
                })
            };
            let flow = Flow::start(&drain_settings, role_of).await?;
            isolated.push(Isolated {
                id: Arc::from(c.id.as_str()),
                isolation: isolations.of(c, None),
                drain: flow
                    .connectors
                    .first()
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default(),
            });
            loops.push((format!("kafka drain of {}", c.id), flow.source.heartbeat()));
            drains.push(flow);
        }
        let watcher = (!drains.is_empty()).then(|| {
            let watched: Vec<Watched> = parked
                .iter()
                .zip(&drains)
                .map(|(c, d)| Watched {
                    id: c.id.clone(),
                    status: d.source.status_handle(),
                    acker: d.acker.clone(),
                })
                .collect();
            tokio::spawn(watch_drains(watched, isolations.clone()))
        });
        let reaper = tenancy_on(settings).then(|| {
            let tenanted: Vec<Arc<PerCustomer>> = std::iter::once(&main)
                .chain(&drains)
                .flat_map(|f| f.tenanted.iter().map(|t| t.connector.clone()))
                .collect();
            tokio::spawn(close_idle(tenanted, settings.tenants.idle_after))
        });
        Ok(Pipeline {
            monitor: Monitor {
                router: main.router.clone(),
                stats: main.stats.clone(),
                connectors: main.connectors.clone(),
                tenanted: main.tenanted.iter().map(|t| t.connector.clone()).collect(),
                isolations: isolations.clone(),
                isolated,
                status: main.source.status_handle(),
                loops,
                stall_after: settings.admin.stall_after,
                acker: main.acker.clone(),
            },
            main,
            drains,
            watcher,
            reaper,
            shutdown_timeout: settings.router.shutdown_timeout,
            settings: std::sync::Mutex::new(settings.clone()),
            isolations,
        })
    }

    /// The isolation state of connector `id`'s instance for `customer` (None: its own), once
    /// that instance has run.
    pub fn instance_state(&self, id: &str, customer: Option<&str>) -> Option<State> {
        self.isolations.state(id, customer)
    }

    /// Where the tenant files are read from, if anywhere.
    pub fn tenant_directory(&self) -> Option<std::path::PathBuf> {
        self.settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tenants
            .directory
            .clone()
    }

    /// Applies `new` settings live, as far as they can be (the README lists which keys need
    /// a restart; a changed tenant directory applies nothing until then). Every instance, the connector's own and each customer's, whose settings
    /// changed is replaced: its in-flight deliveries finish on it, and the next event starts
    /// the new one. Only with `[tenants]`: without it each connector keeps its one instance
    /// on the fast path, and a change to it needs a restart.
    pub fn reload(&self, new: &Settings) -> Reloaded {
        let mut current = self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut reloaded = Reloaded {
            replaced: 0,
            need_restart: needs_restart(&current, new),
        };
        // Tenants read from another directory, or from none, would send customers' events
        // to the connector's own instance until the restart: nothing is applied.
        if current.tenants.directory != new.tenants.directory {
            return reloaded;
        }
        let flows = std::iter::once(&self.main).chain(&self.drains);
        for t in flows.flat_map(|f| &f.tenanted) {
            let id = t.connector.id();
            if let Some(c) = new.connectors.iter().find(|c| *c.id == **id) {
                reloaded.replaced += t.reload(c, new);
            }
        }
        if !tenancy_on(&current) && !same_connectors(&current, new) {
            reloaded.need_restart.push(
                "connectors (without [tenants], each connector runs one instance on the fast path)"
                    .into(),
            );
        }
        *current = new.clone();
        reloaded
    }

    pub fn progress(&self) -> Progress {
        self.monitor.progress()
    }

    pub fn monitor(&self) -> Monitor {
        self.monitor.clone()
    }

    /// The live counters of connector `id` (they stay readable after shutdown).
    pub fn connector_stats(&self, id: &str) -> Option<Arc<ConnectorStats>> {
        self.monitor
            .connectors
            .iter()
            .find(|(c, _)| &**c == id)
            .map(|(_, s)| s.clone())
    }

    /// Connector `id`'s isolation state and drain counters, when parking is on.
    pub fn isolation(&self, id: &str) -> Option<Isolated> {
        self.monitor.isolated.iter().find(|i| &*i.id == id).cloned()
    }

    pub fn source_stats(&self) -> &Arc<SourceStats> {
        &self.monitor.stats
    }

    pub fn timings(&self) -> &Arc<TimingRecorder> {
        &self.main.timings
    }

    /// Committed offsets by (topic, partition).
    pub fn committed(&self) -> HashMap<(String, i32), i64> {
        self.main.source.committed()
    }

    /// The consumer's assignment and commits as of now.
    pub fn source_status(&self) -> Status {
        self.main.source.status()
    }

    /// Waits until `done` holds for the consumer's status; false on timeout.
    pub fn wait_for_source(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> bool {
        self.main.source.wait_for_status(timeout, done)
    }

    /// Graceful stop (see [`Source::stop`]) of every flow at once, all within
    /// `router.shutdown_timeout` (docs/memory.md has the budget). The drains only read the
    /// parking topic; what the main flow parks while stopping is written by its own producer
    /// whether they run or not. True if every delivery finished in time.
    pub async fn shutdown(self) -> bool {
        let Pipeline {
            main,
            drains,
            watcher,
            reaper,
            shutdown_timeout,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        for task in watcher.into_iter().chain(reaper) {
            task.abort();
        }
        let stops: Vec<_> = std::iter::once(main)
            .chain(drains)
            .map(|flow| tokio::spawn(flow.stop(deadline)))
            .collect();
        let mut finished = true;
        for stop in stops {
            finished &= stop.await.unwrap_or(false);
        }
        finished
    }

    /// Stops without committing anything more, as a crash would (for tests). Workers still
    /// settle what they hold, but their acknowledgements change nothing in Kafka.
    pub async fn crash(self) {
        for task in self.watcher.into_iter().chain(self.reaper) {
            task.abort();
        }
        for flow in std::iter::once(self.main).chain(self.drains) {
            let source = flow.source;
            if let Ok(exit) = tokio::task::spawn_blocking(move || source.crash()).await {
                for e in exit.engines {
                    e.abort();
                }
            }
        }
    }
}

/// The settings of connector `id`'s drain: the parking topic in a group of its own, only
/// that connector's records, to that connector alone, and never parked again.
fn drain_settings(settings: &Settings, id: &str) -> Settings {
    let mut d = settings.clone();
    d.kafka.topics = vec![settings.parking.topic.clone()];
    d.kafka.group_id = format!("{}-parked-{id}", settings.kafka.group_id);
    d.kafka.only_with_header = Some((headers::CONNECTOR.into(), id.into()));
    // The end of each partition tells when the backlog is delivered; the topic may not
    // exist until the first event is parked.
    // It is not latency-critical, and idle nearly always: it asks the broker twice a second
    // whatever the main flow's fetch wait, and prefetches 1 MiB rather than 8.
    for (k, v) in [
        ("enable.partition.eof", "true"),
        ("allow.auto.create.topics", "true"),
        ("fetch.wait.max.ms", "500"),
        ("queued.max.messages.kbytes", "1024"),
    ] {
        d.kafka.options.insert(k.into(), v.into());
    }
    d.connectors.retain(|c| c.id == id);
    d.router.default_connectors = vec![id.into()];
    d.router.ignore_connector_lists = true;
    d.parking.enabled = false;
    d
}

/// A connector's drain, as the watcher sees it.
struct Watched {
    id: String,
    status: StatusHandle,
    acker: Arc<Acker>,
}

/// Every [`WATCH_EVERY`], moves each draining instance back to flowing once this replica's
/// drain of its connector has read its partitions to the end and has nothing left in flight.
/// A connector's customers share its drain, so a customer still down holds back the others'
/// return to flowing (not their deliveries: their new events are parked and drained).
async fn watch_drains(drains: Vec<Watched>, isolations: Arc<Isolations>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        for d in &drains {
            let draining: Vec<_> = isolations
                .of_connector(&d.id)
                .into_iter()
                .filter(|i| i.state() == State::Draining)
                .collect();
            if !draining.is_empty()
                && d.status.status().caught_up()
                && d.acker.lock().total_unfinished() == 0
            {
                draining.iter().for_each(|i| i.backlog_empty());
            }
        }
    }
}

/// How often idle customers' instances are looked for.
const IDLE_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Closes customers' instances that have had no event for `idle`: they flush and settle what
/// they hold, and the customer's next event starts a new one.
async fn close_idle(connectors: Vec<Arc<PerCustomer>>, idle: Duration) {
    let mut tick = tokio::time::interval(IDLE_CHECK_EVERY.min(idle));
    loop {
        tick.tick().await;
        for c in &connectors {
            let closed = c.close_idle(idle);
            if closed > 0 {
                tracing::debug!(connector = %c.id(), closed, "idle customer instances closed");
            }
        }
    }
}

/// Whether connectors have per-customer instances: a tenant directory is configured.
fn tenancy_on(settings: &Settings) -> bool {
    settings.tenants.directory.is_some()
}

impl Flow {
    /// Starts every enabled connector of `settings` and its consumer; `role_of` gives each
    /// instance its part in isolation, if any.
    async fn start(settings: &Settings, role_of: RoleOf) -> Result<Flow, StartError> {
        let acker = Arc::new(Acker::new());
        let timings = TimingRecorder::new(4096);
        let stats = Arc::new(SourceStats::default());
        let tenants = tenancy_on(settings);
        let routes = settings
            .connectors
            .iter()
            .map(|c| Route {
                id: c.id.clone(),
                // With tenants, each instance decides: a customer may turn on a connector
                // that is off by default, or filter its events its own way.
                enabled: c.enabled || tenants,
                filter: if tenants {
                    Filter::default()
                } else {
                    c.filter.clone()
                },
            })
            .collect();
        let mut router = Router::new(routes, &settings.router.default_connectors);
        if settings.router.ignore_connector_lists {
            router = router.ignoring_connector_lists();
        }
        let router = Arc::new(router);
        let dead_letters: Option<Arc<dyn DeadLetters>> = match &settings.dead_letter.topic {
            Some(topic) => Some(Arc::new(LetterProducer::new(
                &settings.kafka.brokers,
                topic,
                Purpose::DeadLetters,
                &[&settings.kafka.options, &settings.dead_letter.options],
            )?)),
            None => None,
        };
        let kit = Kit {
            runtime: tokio::runtime::Handle::current(),
            acker: acker.clone(),
            timings: timings.clone(),
            dead_letters: dead_letters.clone(),
            role_of,
        };
        let mut reach: Vec<Option<Reach>> = Vec::new();
        let mut tenanted = Vec::new();
        for c in &settings.connectors {
            let index = router
                .index_of(&c.id)
                .ok_or_else(|| StartError::Connector {
                    id: c.id.clone(),
                    message: "not in the routing table".into(),
                })?;
            if tenants {
                let t = Tenanted::start(c, settings, index, kit.clone());
                reach.push(Some(t.reach()));
                tenanted.push(t);
            } else if c.enabled {
                let wiring = Wiring {
                    acker: acker.clone(),
                    timings: timings.clone(),
                    dead_letters: dead_letters.clone(),
                    isolation: (kit.role_of)(&c.id, None),
                    stats: None,
                };
                reach.push(Some(Reach::One(spawn_connector(c, index, wiring).await?)));
            } else {
                reach.push(None);
            }
        }
        let connectors = settings
            .connectors
            .iter()
            .zip(&reach)
            .filter_map(|(c, r)| Some((Arc::from(c.id.as_str()), r.as_ref()?.stats().clone())))
            .collect();
        let dispatcher = Dispatcher::new(
            router.clone(),
            reach,
            acker.clone(),
            stats.clone(),
            Limits {
                max_bytes: settings.router.max_event_bytes,
                max_members: settings.router.max_array_members,
            },
            dead_letters,
        );
        let source = Source::start(settings.kafka.clone(), dispatcher)?;
        Ok(Flow {
            source,
            acker,
            timings,
            router,
            stats,
            connectors,
            tenanted,
        })
    }

    /// Graceful stop by `deadline`; true if every delivery finished.
    async fn stop(self, deadline: tokio::time::Instant) -> bool {
        let source = self.source;
        let exit = tokio::task::spawn_blocking(move || source.stop()).await;
        let Ok(exit) = exit else {
            return false;
        };
        // Leaving the group revoked every partition, so the workers drop what they still
        // retry and end; one stuck in a request is stopped at the deadline.
        let aborts: Vec<_> = exit.engines.iter().map(|e| e.abort_handle()).collect();
        let finished = tokio::time::timeout_at(deadline, futures_join(exit.engines))
            .await
            .is_ok();
        if !finished {
            tracing::warn!("connector workers still busy at the shutdown deadline: stopped");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        exit.drained && finished
    }
}

/// Builds connector `c` through its kind's crate and starts its worker.
async fn spawn_connector(
    c: &crate::settings::ConnectorSettings,
    index: switchyard_core::ConnectorIndex,
    wiring: Wiring,
) -> Result<ConnectorHandle, StartError> {
    c.kind
        .spawn(&c.id, index, &c.client, c.engine.clone(), wiring)
        .await
        .map_err(|message| StartError::Connector {
            id: c.id.clone(),
            message,
        })
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
