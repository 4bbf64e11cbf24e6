//! Wiring: settings → connector workers → dispatcher → Kafka source.

use crate::settings::Settings;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::stats::ConnectorSnapshot;
use switchyard_core::stats::Health;
use switchyard_core::{
    Acker, ConnectorHandle, ConnectorStats, Dispatcher, Heartbeat, Isolation, Role, Route, Router,
    SourceStats, State, TimingRecorder,
};
use switchyard_core::{DeadLetters, Wiring};
use switchyard_kafka::letters::headers;
use switchyard_kafka::{LetterProducer, Purpose, Source, SourceError, Status, StatusHandle};

/// A running router: the main flow from the source topics, and per connector the drain of
/// its parked events (docs/isolation.md).
pub struct Pipeline {
    main: Flow,
    drains: Vec<Flow>,
    /// Moves draining destinations back to flowing once their backlog is delivered.
    watcher: Option<tokio::task::JoinHandle<()>>,
    monitor: Monitor,
    shutdown_timeout: Duration,
}

/// One consumer group and the connector workers it feeds.
struct Flow {
    source: Source,
    acker: Arc<Acker>,
    timings: Arc<TimingRecorder>,
}

/// What observers (the admin server, the progress line, tests) read of a pipeline. Cheap to
/// clone, and readable after the pipeline has stopped.
#[derive(Clone)]
pub struct Monitor {
    router: Arc<Router>,
    stats: Arc<SourceStats>,
    connectors: Vec<(Arc<str>, Arc<ConnectorStats>)>,
    isolated: Vec<Isolated>,
    status: StatusHandle,
    /// Each consumer's poll loop, by the name liveness reports it under.
    loops: Vec<(String, Arc<Heartbeat>)>,
    stall_after: Duration,
    /// The main flow's offsets: what is unfinished, in events and payload bytes.
    acker: Arc<Acker>,
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

    pub fn connectors(&self) -> &[(Arc<str>, Arc<ConnectorStats>)] {
        &self.connectors
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
    /// Tenants are read and checked, but routing by tenant is not built yet: running would
    /// send every tenant's events with the default credentials (docs/tenancy.md).
    #[error(
        "tenants.directory is set, but routing events to each customer's own destinations is not built yet (docs/tenancy.md); remove [tenants] to run"
    )]
    TenantsNotRouted,
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
        if settings.tenants.directory.is_some() {
            return Err(StartError::TenantsNotRouted);
        }
        let isolations: Vec<(String, Arc<Isolation>)> = if settings.parking.enabled {
            settings
                .connectors
                .iter()
                .filter(|c| c.enabled)
                .map(|c| (c.id.clone(), Arc::new(Isolation::new(&c.id, c.isolation))))
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
        let role_of = |id: &str| {
            let isolation = isolations.iter().find(|(i, _)| i == id)?.1.clone();
            Some(Role::Main {
                isolation,
                parking: parking.clone()?,
            })
        };
        let (main, router, stats, connectors) = Flow::start(settings, &role_of).await?;
        let mut drains = Vec::new();
        let mut isolated = Vec::new();
        let mut loops = vec![("kafka".to_string(), main.source.heartbeat())];
        for (id, isolation) in &isolations {
            let drain_settings = drain_settings(settings, id);
            let role = |_: &str| Some(Role::Drain(isolation.clone()));
            let (flow, _, _, drained) = Flow::start(&drain_settings, &role).await?;
            isolated.push(Isolated {
                id: Arc::from(id.as_str()),
                isolation: isolation.clone(),
                drain: drained.first().map(|(_, s)| s.clone()).unwrap_or_default(),
            });
            loops.push((format!("kafka drain of {id}"), flow.source.heartbeat()));
            drains.push(flow);
        }
        let watcher = (!drains.is_empty()).then(|| {
            let watched: Vec<(Arc<Isolation>, StatusHandle, Arc<Acker>)> = isolations
                .iter()
                .zip(&drains)
                .map(|((_, i), d)| (i.clone(), d.source.status_handle(), d.acker.clone()))
                .collect();
            tokio::spawn(watch_drains(watched))
        });
        Ok(Pipeline {
            monitor: Monitor {
                router,
                stats,
                connectors,
                isolated,
                status: main.source.status_handle(),
                loops,
                stall_after: settings.admin.stall_after,
                acker: main.acker.clone(),
            },
            main,
            drains,
            watcher,
            shutdown_timeout: settings.router.shutdown_timeout,
        })
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
            shutdown_timeout,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        if let Some(w) = watcher {
            w.abort();
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
        if let Some(w) = self.watcher {
            w.abort();
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

/// Every [`WATCH_EVERY`], moves each draining destination back to flowing once this replica's
/// drain has read its partitions to the end and has nothing left in flight.
async fn watch_drains(drains: Vec<(Arc<Isolation>, StatusHandle, Arc<Acker>)>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        for (isolation, status, acker) in &drains {
            if isolation.state() == State::Draining
                && status.status().caught_up()
                && acker.lock().total_unfinished() == 0
            {
                isolation.backlog_empty();
            }
        }
    }
}

type Started = (
    Flow,
    Arc<Router>,
    Arc<SourceStats>,
    Vec<(Arc<str>, Arc<ConnectorStats>)>,
);

impl Flow {
    /// Starts every enabled connector of `settings` and its consumer; `role_of` gives each
    /// connector its part in isolation, if any.
    async fn start(
        settings: &Settings,
        role_of: &dyn Fn(&str) -> Option<Role>,
    ) -> Result<Started, StartError> {
        let acker = Arc::new(Acker::new());
        let timings = TimingRecorder::new(4096);
        let stats = Arc::new(SourceStats::default());
        let routes = settings
            .connectors
            .iter()
            .map(|c| Route {
                id: c.id.clone(),
                enabled: c.enabled,
                filter: c.filter.clone(),
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
        let mut handles: Vec<Option<ConnectorHandle>> = Vec::new();
        for c in &settings.connectors {
            let index = router
                .index_of(&c.id)
                .ok_or_else(|| StartError::Connector {
                    id: c.id.clone(),
                    message: "not in the routing table".into(),
                })?;
            if !c.enabled {
                handles.push(None);
                continue;
            }
            let wiring = Wiring {
                acker: acker.clone(),
                timings: timings.clone(),
                dead_letters: dead_letters.clone(),
                isolation: role_of(&c.id),
            };
            handles.push(Some(spawn_connector(c, index, wiring).await?));
        }
        let connectors = handles
            .iter()
            .flatten()
            .map(|h| (h.id.clone(), h.stats.clone()))
            .collect();
        let dispatcher = Dispatcher::new(
            router.clone(),
            handles,
            acker.clone(),
            stats.clone(),
            settings.router.max_event_bytes,
            dead_letters,
        );
        let source = Source::start(settings.kafka.clone(), dispatcher)?;
        let flow = Flow {
            source,
            acker,
            timings,
        };
        Ok((flow, router, stats, connectors))
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
        .spawn(&c.id, index, &c.client, c.engine, wiring)
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
