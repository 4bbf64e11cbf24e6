//! A Kafka-protocol broker for tests and the demo: librdkafka's mock cluster, in process, on
//! random 127.0.0.1 ports; or, with the `testcontainers` feature and
//! `SWITCHYARD_TEST_KAFKA=testcontainers`, a real Kafka in Docker.

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use std::time::Duration;

pub struct Broker {
    kind: Kind,
    bootstrap: String,
}

enum Kind {
    Mock(MockCluster<'static, DefaultProducerContext>),
    #[cfg(feature = "testcontainers")]
    Container(Box<containers::Running>),
}

/// Errors setting up the broker fixture.
pub type BrokerError = String;

impl Broker {
    /// The broker the environment asks for: the mock cluster unless
    /// `SWITCHYARD_TEST_KAFKA=testcontainers` (which needs the `testcontainers` feature and a
    /// Docker engine).
    pub fn from_env() -> Result<Broker, BrokerError> {
        match std::env::var("SWITCHYARD_TEST_KAFKA").as_deref() {
            Ok("testcontainers") => Self::container(),
            Ok("mock") | Ok("") | Err(_) => Self::mock(),
            Ok(other) => Err(format!(
                "SWITCHYARD_TEST_KAFKA={other:?}: expected mock or testcontainers"
            )),
        }
    }

    /// librdkafka's mock cluster with three brokers.
    pub fn mock() -> Result<Broker, BrokerError> {
        let cluster = MockCluster::new(3).map_err(|e| e.to_string())?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Broker {
            kind: Kind::Mock(cluster),
            bootstrap,
        })
    }

    #[cfg(feature = "testcontainers")]
    fn container() -> Result<Broker, BrokerError> {
        let running = containers::start()?;
        let bootstrap = running.bootstrap.clone();
        Ok(Broker {
            kind: Kind::Container(Box::new(running)),
            bootstrap,
        })
    }

    #[cfg(not(feature = "testcontainers"))]
    fn container() -> Result<Broker, BrokerError> {
        Err(
            "SWITCHYARD_TEST_KAFKA=testcontainers needs the testkit's `testcontainers` feature"
                .into(),
        )
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The mock cluster, for fault injection; `None` on a real broker.
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        match &self.kind {
            Kind::Mock(m) => Some(m),
            #[cfg(feature = "testcontainers")]
            Kind::Container(_) => None,
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        match &self.kind {
            Kind::Mock(m) => m
                .create_topic(name, partitions, 1)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "testcontainers")]
            Kind::Container(c) => c.create_topic(name, partitions),
        }
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .set("message.max.bytes", "10000000")
            .create()
            .expect("producer config is valid")
    }

    /// Produces `records` (partition, payload) and waits until the broker has them all.
    pub fn produce(&self, topic: &str, records: impl IntoIterator<Item = (i32, Vec<u8>)>) {
        let p = self.producer();
        for (partition, payload) in records {
            let mut record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload);
            loop {
                match p.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        // Queue full: let deliveries drain, then try again.
                        assert!(
                            matches!(
                                e,
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull
                                )
                            ),
                            "produce failed: {e}"
                        );
                        p.poll(Duration::from_millis(10));
                        record = r;
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60))
            .expect("all records reach the broker");
    }
}

#[cfg(feature = "testcontainers")]
mod containers {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
    use testcontainers_modules::testcontainers::Container;
    use testcontainers_modules::testcontainers::runners::SyncRunner;

    pub struct Running {
        _container: Container<Kafka>,
        pub bootstrap: String,
    }

    pub fn start() -> Result<Running, String> {
        let container = Kafka::default().start().map_err(|e| e.to_string())?;
        let port = container
            .get_host_port_ipv4(KAFKA_PORT)
            .map_err(|e| e.to_string())?;
        Ok(Running {
            _container: container,
            bootstrap: format!("127.0.0.1:{port}"),
        })
    }

    impl Running {
        pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
            let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .create()
                .map_err(|e| e.to_string())?;
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(admin.create_topics([&topic], &AdminOptions::new()))
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}
