//! The routing core of switchyard: what an event is, where it goes, how it is delivered and
//! when its Kafka offset may be committed.
//!
//! It owns the shared delivery engine (batching, retry with backoff, bounded concurrency,
//! `collector_observability` timings, acknowledgements) so that every destination retries the
//! same way. It knows nothing of Kafka or HTTP: a destination plugs in through [`Connector`],
//! the Kafka source through [`Dispatcher`] and [`Acker`].

pub mod age;
pub mod batch;
pub mod compress;
pub mod config;
pub mod connector;
pub mod dead_letter;
pub mod dispatch;
pub mod engine;
pub mod event;
pub mod fields;
pub mod heartbeat;
pub mod isolation;
pub mod log;
pub mod offsets;
pub mod rate;
pub mod record;
pub mod retry;
pub mod route;
pub mod sample;
pub mod secret;
pub mod shipment;
pub mod stats;
pub mod tenancy;
pub mod timings;

pub use batch::BatchLimits;
pub use config::Problem;
pub use connector::{
    ConfirmError, ConfirmSettings, Connector, Dropped, EncodeError, Encoded, EventVerdict, Fix,
    Outcome, Receipt, SendError, Verdict,
};
pub use dead_letter::{DeadLetters, Letter, Refusals};
pub use dispatch::{Dispatcher, Reach};
pub use engine::{
    BuildFuture, ConnectorHandle, Engine, EngineSettings, HealthCheck, Refuse, Role, Wiring,
};
pub use event::{Envelope, Event, MalformedReason, Origin, PartitionId};
pub use fields::{FieldSelection, FieldsError, Shaped};
pub use heartbeat::Heartbeat;
pub use isolation::{Isolation, IsolationSettings, State};
pub use offsets::{Acker, OffsetTracker};
pub use rate::RateLimit;
pub use retry::{OnExhausted, RetryPolicy};
pub use route::{Admit, ConnectorIndex, Filter, Route, Router, TargetSet};
pub use sample::{DEFAULT_SAMPLE_KEY, Sample, SampleError};
pub use secret::Secret;
pub use shipment::Shipment;
pub use stats::{ConnectorStats, SourceStats};
pub use tenancy::{Fallback, Instance, Instances, PerCustomer, Resolved, Start};
pub use timings::{DeliveryTimings, TimingRecord, TimingRecorder};
