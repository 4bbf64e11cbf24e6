//! Fixtures shared by the tests and the embedded demo (`make run`): a Kafka-protocol broker,
//! strict fake destinations that enforce each API's documented rules, and a generator of
//! realistic QoE events derived from the sample event.

pub mod broker;
pub mod datadog;
pub mod fake;
pub mod firehose;
pub mod generate;
pub mod hec;
pub mod newrelic;
pub mod otlp;
pub mod probe;
pub mod proxy;
#[cfg(feature = "tls")]
pub mod tls;

pub use broker::Broker;
pub use datadog::FakeDatadog;
pub use firehose::{FakeFirehose, Moto};
pub use generate::Generator;
pub use hec::FakeHec;
pub use newrelic::FakeNewRelic;
pub use otlp::FakeOtlp;
pub use proxy::ConnectProxy;

/// An event parsed from `json` as if read at offset 0 of partition 0 of topic `qoe`.
/// Panics on bad JSON: for tests only.
pub fn event(json: &str) -> switchyard_core::Event {
    let origin = switchyard_core::Origin {
        partition: switchyard_core::PartitionId(0),
        topic: "qoe".into(),
        kafka_partition: 0,
        offset: 0,
        member: None,
    };
    switchyard_core::Event::parse(bytes::Bytes::from(json.to_owned()), origin, 8 << 20)
        .expect("test event parses")
}
