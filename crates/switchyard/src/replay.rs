//! `switchyard replay`: after the cause of a connector's rejections is fixed, deliver that
//! connector's dead-lettered events again.
//!
//! It consumes the dead-letter topic with a group of its own
//! (`<group_id>-replay-<connector>`), keeps only records whose `switchyard.connector` header
//! names the connector, sends each to that connector alone (whatever its `connector_list`
//! says: the other destinations have it already), and stops once it has caught up with the
//! topic as it was at the start. Run it again to pick up later letters; the group remembers
//! where it stopped. An event refused again is logged and counted, not dead-lettered again
//! into the topic being replayed.

use crate::pipeline::{Pipeline, StartError};
use crate::settings::Settings;
use std::time::Duration;
use switchyard_kafka::client::{committed_offsets, high_watermarks};
use switchyard_kafka::letters::headers;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no [dead_letter] topic is configured")]
    NoDeadLetterTopic,
    #[error("no connector {0:?} is configured")]
    UnknownConnector(String),
    #[error("reading the dead-letter topic: {0}")]
    Kafka(#[from] switchyard_kafka::KafkaError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("not caught up within {0:?}")]
    Timeout(Duration),
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: u64,
    pub refused_again: u64,
}

/// Replays `connector`'s letters, waiting at most `timeout` to catch up.
pub async fn run(
    settings: &Settings,
    connector: &str,
    timeout: Duration,
) -> Result<ReplayReport, ReplayError> {
    let topic = settings
        .dead_letter
        .topic
        .clone()
        .ok_or(ReplayError::NoDeadLetterTopic)?;
    if !settings.connectors.iter().any(|c| c.id == connector) {
        return Err(ReplayError::UnknownConnector(connector.into()));
    }
    let group = format!("{}-replay-{connector}", settings.kafka.group_id);
    let ends = {
        let (kafka, topic, group) = (settings.kafka.clone(), topic.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            let ends = high_watermarks(&kafka.brokers, &kafka.options, &topic)?;
            let done = committed_offsets(
                &kafka.brokers,
                &kafka.options,
                &group,
                &topic,
                ends.keys().copied(),
            )?;
            // Only partitions with letters this group has not read yet are waited for: an
            // empty one, or one already caught up, commits nothing new, so no commit would
            // ever show that it is done.
            Ok::<_, switchyard_kafka::KafkaError>(
                ends.into_iter()
                    .filter(|(p, end)| *end > 0 && done.get(p).is_none_or(|d| d < end))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|_| ReplayError::Timeout(timeout))??
    };
    if ends.is_empty() {
        return Ok(ReplayReport {
            delivered: 0,
            refused_again: 0,
        });
    }
    let mut replay = settings.clone();
    replay.kafka.topics = vec![topic.clone()];
    replay.kafka.group_id = group;
    replay.kafka.only_with_header = Some((headers::CONNECTOR.into(), connector.into()));
    replay.connectors.retain(|c| c.id == connector);
    replay.connectors.iter_mut().for_each(|c| c.enabled = true);
    replay.router.default_connectors = vec![connector.into()];
    replay.router.ignore_connector_lists = true;
    replay.dead_letter.topic = None;
    // Replay sends to the connector alone and stops when caught up: nothing to park or drain.
    replay.parking.enabled = false;

    let pipeline = Pipeline::start(&replay).await?;
    let caught_up = tokio::task::block_in_place(|| {
        pipeline.wait_for_source(timeout, |s| {
            ends.iter().all(|(p, end)| {
                s.committed
                    .get(&(topic.clone(), *p))
                    .is_some_and(|c| c >= end)
            })
        })
    });
    let stats = pipeline
        .connector_stats(connector)
        .map(|s| s.snapshot())
        .unwrap_or_default();
    pipeline.shutdown().await;
    if !caught_up {
        return Err(ReplayError::Timeout(timeout));
    }
    Ok(ReplayReport {
        delivered: stats.delivered,
        refused_again: stats.rejected,
    })
}
