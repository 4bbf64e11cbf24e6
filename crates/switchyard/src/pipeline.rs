//! Wiring: settings → connector workers → dispatcher → Kafka source.

use crate::settings::{Kind, Settings};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::stats::ConnectorSnapshot;
use switchyard_core::stats::Health;
use switchyard_core::{
    Acker, ConnectorHandle, ConnectorStats, Dispatcher, Engine, Route, Router, SourceStats,
    TimingRecorder,
};
use switchyard_core::{DeadLetters, Wiring};
use switchyard_datadog_logs::DatadogLogs;
use switchyard_kafka::{DlqProducer, Source, SourceError, Status, StatusHandle};
use switchyard_kinesis_firehose::KinesisFirehose;
use switchyard_newrelic_events::NewRelicEvents;
use switchyard_splunk_hec::SplunkHec;

/// A running router.
pub struct Pipeline {
    source: Source,
    monitor: Monitor,
    timings: Arc<TimingRecorder>,
    shutdown_timeout: Duration,
}

/// What observers (the admin server, the progress line, tests) read of a pipeline. Cheap to
/// clone, and readable after the pipeline has stopped.
#[derive(Clone)]
pub struct Monitor {
    router: Arc<Router>,
    stats: Arc<SourceStats>,
    connectors: Vec<(Arc<str>, Arc<ConnectorStats>)>,
    status: StatusHandle,
}

impl Monitor {
    pub fn progress(&self) -> Progress {
        use std::sync::atomic::Ordering::Relaxed;
        Progress {
            consumed: self.stats.consumed.load(Relaxed),
            malformed: self.stats.malformed_total(),
            unrouted: self.stats.unrouted.load(Relaxed),
            paused_partitions: self.stats.paused_partitions.load(Relaxed),
            pauses: self.stats.pauses.load(Relaxed),
            unknown_connectors: self.router.unknown_counts(),
            connectors: self
                .connectors
                .iter()
                .map(|(id, s)| (id.to_string(), s.snapshot()))
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

    /// Ready when the consumer has joined its group and every enabled connector passed its
    /// health check; otherwise what is missing, one line each.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        if self.status.status().rebalances == 0 {
            missing.push("kafka: consumer has not joined its group yet".to_string());
        }
        for (id, stats) in &self.connectors {
            match stats.health() {
                Health::Healthy => {}
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
    #[error("dead-letter producer: {0}")]
    DeadLetter(#[from] switchyard_kafka::KafkaError),
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
    pub unknown_connectors: Vec<(String, u64)>,
    pub connectors: Vec<(String, ConnectorSnapshot)>,
}

impl Pipeline {
    /// Starts every enabled connector and joins the consumer group. The workers run on the
    /// calling tokio runtime.
    pub async fn start(settings: &Settings) -> Result<Pipeline, StartError> {
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
            Some(topic) => Some(Arc::new(DlqProducer::new(
                &settings.kafka.brokers,
                topic,
                &settings.dead_letter.options,
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
            let failed = |e: &dyn std::fmt::Display| StartError::Connector {
                id: c.id.clone(),
                message: e.to_string(),
            };
            let wiring = Wiring {
                acker: acker.clone(),
                timings: timings.clone(),
                dead_letters: dead_letters.clone(),
            };
            let handle = match &c.kind {
                Kind::SplunkHec(cfg) => {
                    let connector = SplunkHec::new(cfg).map_err(|e| failed(&e))?;
                    Engine::spawn(connector, &c.id, index, c.engine, wiring.clone())
                }
                Kind::DatadogLogs(cfg) => {
                    let connector = DatadogLogs::new(cfg).map_err(|e| failed(&e))?;
                    Engine::spawn(connector, &c.id, index, c.engine, wiring.clone())
                }
                Kind::NewRelicEvents(cfg) => {
                    let connector = NewRelicEvents::new(cfg).map_err(|e| failed(&e))?;
                    Engine::spawn(connector, &c.id, index, c.engine, wiring.clone())
                }
                Kind::KinesisFirehose(cfg) => {
                    let connector = KinesisFirehose::new(cfg).await;
                    Engine::spawn(connector, &c.id, index, c.engine, wiring.clone())
                }
            };
            handles.push(Some(handle));
        }
        let connectors = handles
            .iter()
            .flatten()
            .map(|h| (h.id.clone(), h.stats.clone()))
            .collect();
        let dispatcher = Dispatcher::new(
            router.clone(),
            handles,
            acker,
            stats.clone(),
            settings.router.max_event_bytes,
            dead_letters,
        );
        let source = Source::start(settings.kafka.clone(), dispatcher)?;
        Ok(Pipeline {
            monitor: Monitor {
                router,
                stats,
                connectors,
                status: source.status_handle(),
            },
            source,
            timings,
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

    pub fn source_stats(&self) -> &Arc<SourceStats> {
        &self.monitor.stats
    }

    pub fn timings(&self) -> &Arc<TimingRecorder> {
        &self.timings
    }

    /// Committed offsets by (topic, partition).
    pub fn committed(&self) -> HashMap<(String, i32), i64> {
        self.source.committed()
    }

    /// The consumer's assignment and commits as of now.
    pub fn source_status(&self) -> Status {
        self.source.status()
    }

    /// Waits until `done` holds for the consumer's status; false on timeout.
    pub fn wait_for_source(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> bool {
        self.source.wait_for_status(timeout, done)
    }

    /// Graceful stop (see [`Source::stop`]). True if every delivery finished in time.
    pub async fn shutdown(self) -> bool {
        let Pipeline {
            source,
            shutdown_timeout,
            ..
        } = self;
        let exit = tokio::task::spawn_blocking(move || source.stop()).await;
        let Ok(exit) = exit else {
            return false;
        };
        let engines = futures_join(exit.engines);
        // The drain wait already spent most of the budget; this only collects the workers.
        let finished = tokio::time::timeout(shutdown_timeout, engines)
            .await
            .is_ok();
        exit.drained && finished
    }

    /// Stops without committing anything more, as a crash would (for tests). Workers still
    /// settle what they hold, but their acknowledgements change nothing in Kafka.
    pub async fn crash(self) {
        let source = self.source;
        if let Ok(exit) = tokio::task::spawn_blocking(move || source.crash()).await {
            for e in exit.engines {
                e.abort();
            }
        }
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
