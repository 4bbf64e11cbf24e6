//! Fixtures shared by the tests and the embedded demo (`make run`): a Kafka-protocol broker,
//! strict fake destinations that enforce each API's documented rules, and a generator of
//! realistic QoE events derived from the sample event.

pub mod broker;
pub mod datadog;
pub mod fake;
pub mod generate;
pub mod hec;
pub mod newrelic;

pub use broker::Broker;
pub use datadog::FakeDatadog;
pub use generate::Generator;
pub use hec::FakeHec;
pub use newrelic::FakeNewRelic;
