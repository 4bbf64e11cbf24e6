//! Where permanently refused records go: the contract between the engine (and the
//! dispatcher, for malformed input) and a dead-letter destination such as a Kafka topic.

use crate::event::{Envelope, Origin};
use bytes::Bytes;
use std::sync::Arc;

/// A record that will not be delivered, with why.
#[derive(Debug, Clone)]
pub struct Letter {
    /// The record exactly as read from Kafka.
    pub raw: Bytes,
    /// Its key and headers, to be written with it.
    pub envelope: Option<Arc<Envelope>>,
    pub origin: Origin,
    /// The connector that refused it, or `router` for malformed input.
    pub connector: Arc<str>,
    pub reason: String,
    /// The destination's last status (0 when there was none).
    pub status_code: u16,
    pub attempts: u32,
    /// When the first attempt to deliver it began, epoch ms; 0 when it was never sent.
    pub first_attempt_ms: u64,
}

/// A topic that takes letters: the dead-letter topic, or the parking topic of detached
/// destinations. `write` must call `done` once the letter is durably stored and must keep
/// trying until then: the record's offset is not committed before `done`, so an unavailable
/// topic holds the partition rather than losing the record.
pub trait DeadLetters: Send + Sync + 'static {
    fn write(&self, letter: Letter, done: Box<dyn FnOnce() + Send>);
}

/// The connector id used in letters for malformed input.
pub const ROUTER: &str = "router";
