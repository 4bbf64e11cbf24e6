//! The Kafka side of switchyard: an at-least-once consumer group member.
//!
//! It reads records, hands them to the core's [`Dispatcher`], and commits each partition's
//! watermark (from the core's [`Acker`]) periodically, when a partition is revoked (after
//! letting its in-flight deliveries finish, up to a timeout) and at shutdown. Offsets are
//! stored manually; nothing is committed that some destination still owes. A partition with
//! too much unfinished work is paused rather than buffered.
//!
//! The consumer runs on its own thread with librdkafka's `BaseConsumer`, so rebalance
//! callbacks, which must block while a revoked partition drains, block only that thread.

pub mod client;
mod context;
pub mod letters;
mod options;
pub mod settings;
mod source;

pub use context::Status;
pub use letters::{LetterProducer, Purpose};
pub use options::{KafkaOptions, is_sensitive};
pub use rdkafka::error::KafkaError;
pub use source::{
    OVERLOAD_WAIT, Source, SourceConfig, SourceError, SourceExit, StatusHandle, shutdown_reserve,
};
pub use switchyard_core::{Acker, Dispatcher};
