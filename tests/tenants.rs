//! Per-customer destinations end to end (docs/tenancy.md): each customer's events reach its
//! own endpoints with its own credentials, and nothing else does. Strict fakes tell the
//! customers apart: each has its own address and accepts only its own token or key.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use switchyard::{Pipeline, Settings};
use switchyard_core::State;
use switchyard_testkit::{FakeDatadog, FakeHec};
use switchyard_tests::*;

/// A tenant directory under the system's temporary folder, removed when dropped.
struct TenantDir(PathBuf);

impl TenantDir {
    fn new(name: &str) -> TenantDir {
        let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TenantDir(dir)
    }

    fn write(&self, customer: &str, text: &str) {
        // Written aside and renamed, as a ConfigMap update swaps files whole.
        let tmp = self.0.join(format!(".{customer}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.0.join(format!("{customer}.toml"))).unwrap();
    }

    fn remove(&self, customer: &str) {
        std::fs::remove_file(self.0.join(format!("{customer}.toml"))).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TenantDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which events go where: a connector and a place, for each event id.
type Expected = BTreeMap<String, BTreeSet<String>>;

/// Where one connector's events of one customer go, in one version of the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// The fake with this name.
    Fake(String),
    /// Nowhere: the customer turned the connector off.
    Off,
    /// Dead-lettered (`no_tenant`).
    Refused,
}

/// One version of the tenants: per customer and connector, its own fake (by name) or off.
#[derive(Debug, Clone)]
struct Version {
    reject_unknown: bool,
    /// customer → connector → Some(own fake's name) or None (turned off).
    own: BTreeMap<String, BTreeMap<&'static str, Option<String>>>,
}

impl Version {
    fn place(&self, customer: Option<&str>, connector: &'static str) -> Place {
        let own = customer.and_then(|c| self.own.get(c)?.get(connector));
        match own {
            Some(Some(fake)) => Place::Fake(fake.clone()),
            Some(None) => Place::Off,
            None if self.reject_unknown => Place::Refused,
            None => Place::Fake(format!("default-{connector}")),
        }
    }

    /// The tenant files of this version, as (customer, text).
    fn files(&self, fakes: &Fakes) -> Vec<(String, String)> {
        self.own
            .iter()
            .map(|(customer, connectors)| {
                let mut text = String::new();
                for (connector, own) in connectors {
                    let (id, secret_key) = match *connector {
                        "hec" => (SPLUNK, "token"),
                        _ => (DD, "api_key"),
                    };
                    text.push_str(&format!("[connectors.{id}]\n"));
                    match own {
                        Some(fake) => {
                            text.push_str(&format!(
                                "endpoint = \"{}\"\n{secret_key} = \"${{{}}}\"\n",
                                fakes.url(fake),
                                secret_name(fake)
                            ));
                        }
                        None => text.push_str("enabled = false\n"),
                    }
                }
                (customer.clone(), text)
            })
            .collect()
    }
}

/// The variable that holds the credential of the fake called `name`.
fn secret_name(fake: &str) -> String {
    format!("SECRET_{}", fake.replace('-', "_").to_uppercase())
}

/// The credential the fake called `name` accepts (and no other fake does).
fn secret_of(fake: &str) -> String {
    format!("secret-of-{fake}-0123456789")
}

/// Every fake of a test, by name.
#[derive(Default)]
struct Fakes {
    hec: BTreeMap<String, FakeHec>,
    dd: BTreeMap<String, FakeDatadog>,
}

impl Fakes {
    async fn add(&mut self, name: &str) {
        if name.contains("hec") {
            let fake = FakeHec::builder(&secret_of(name)).start().await.unwrap();
            self.hec.insert(name.into(), fake);
        } else {
            let fake = FakeDatadog::start(&secret_of(name)).await.unwrap();
            self.dd.insert(name.into(), fake);
        }
    }

    fn url(&self, name: &str) -> String {
        match self.hec.get(name) {
            Some(f) => f.url(),
            None => self.dd[name].url(),
        }
    }

    /// Event ids each fake received, by fake.
    fn received(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (name, f) in &self.hec {
            let ids = f
                .received()
                .iter()
                .filter_map(|e| e["event"]["event_id"].as_str().map(str::to_owned))
                .collect();
            out.insert(name.clone(), ids);
        }
        for (name, f) in &self.dd {
            let ids = f
                .received()
                .iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect();
            out.insert(name.clone(), ids);
        }
        out
    }
}

const DD: &str = "dz-connector-datadog";
const CONNECTORS: [&str; 2] = ["hec", "dd"];

fn connector_id(short: &str) -> &'static str {
    if short == "hec" { SPLUNK } else { DD }
}

/// A broker with the test topic on two partitions, an empty tenant directory, and the fakes
/// `names` (always with the two default ones).
async fn rig(test: &str, names: &[&str]) -> (Harness, TenantDir, Fakes) {
    let h = Harness::new(2).await;
    let dir = TenantDir::new(test);
    let mut fakes = Fakes::default();
    for name in ["default-hec", "default-dd"].iter().chain(names) {
        fakes.add(name).await;
    }
    (h, dir, fakes)
}

/// `connectors.toml` for a tenant directory: both connectors, pointed at the default fakes.
fn config(h: &Harness, group: &str, fakes: &Fakes, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["{TOPIC}"]
group_id = "{group}"
commit_interval_ms = 100
revoke_drain_timeout_secs = 5
[kafka.options]
"session.timeout.ms" = "6000"

[tenants]
directory = "{dir}"
unknown = "${{UNKNOWN_POLICY}}"
metrics_label_limit = 3

[connectors.{SPLUNK}]
kind = "splunk_hec"
endpoint = "{hec}"
token = "${{{hec_secret}}}"
index = "qoe"
timeout_secs = 5
[connectors.{SPLUNK}.batch]
max_linger_ms = 20
[connectors.{SPLUNK}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200

[connectors.{DD}]
kind = "datadog_logs"
endpoint = "{dd}"
api_key = "${{{dd_secret}}}"
[connectors.{DD}.batch]
max_linger_ms = 20
[connectors.{DD}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
{extra}
"#,
        brokers = h.broker.bootstrap_servers(),
        dir = dir.display(),
        hec = fakes.url("default-hec"),
        dd = fakes.url("default-dd"),
        hec_secret = secret_name("default-hec"),
        dd_secret = secret_name("default-dd"),
    )
}

/// Resolves each fake's secret variable, and the unknown-customer policy.
fn lookup_for(reject_unknown: bool) -> impl Fn(&str) -> Option<String> {
    move |name: &str| {
        if name == "UNKNOWN_POLICY" {
            return Some(if reject_unknown { "reject" } else { "default" }.into());
        }
        let fake = name
            .strip_prefix("SECRET_")?
            .to_lowercase()
            .replace('_', "-");
        Some(secret_of(&fake))
    }
}

/// A produced event: its id, its customer (if it has one), the connectors it names (short
/// names), and the record.
#[derive(Clone)]
struct TestEvent {
    id: String,
    customer: Option<String>,
    list: Vec<&'static str>,
    bytes: Vec<u8>,
}

/// `n` events from customers among `customers` (and a few with none), each naming one or
/// both connectors; returns them with what each is.
fn events(rng: &mut fastrand::Rng, run: &str, n: usize, customers: &[String]) -> Vec<TestEvent> {
    let mut g = switchyard_testkit::Generator::new(run, rng.u64(..));
    (0..n)
        .map(|_| {
            let (id, bytes) = g.next_event();
            let mut e: Value = serde_json::from_slice(&bytes).unwrap();
            let customer =
                (rng.u8(..10) > 0).then(|| customers[rng.usize(..customers.len())].clone());
            match &customer {
                Some(c) => e["customer_code"] = c.as_str().into(),
                None => {
                    e.as_object_mut().unwrap().remove("customer_code");
                }
            }
            let list: Vec<&'static str> = match rng.u8(..3) {
                0 => vec!["hec"],
                1 => vec!["dd"],
                _ => vec!["hec", "dd"],
            };
            let ids: Vec<&str> = list.iter().map(|c| connector_id(c)).collect();
            e["connector_list"] = ids.join(",").into();
            TestEvent {
                id,
                customer,
                list,
                bytes: serde_json::to_vec(&e).unwrap(),
            }
        })
        .collect()
}

/// `e`, naming HEC alone.
fn to_hec_only(mut e: TestEvent) -> TestEvent {
    e.list = vec!["hec"];
    let mut v: Value = serde_json::from_slice(&e.bytes).unwrap();
    v["connector_list"] = SPLUNK.into();
    e.bytes = serde_json::to_vec(&v).unwrap();
    e
}

/// A random version of the tenants over `customers`: each names each connector with a
/// probability, pointing it at a fake of its own or turning it off.
async fn random_version(
    rng: &mut fastrand::Rng,
    customers: &[String],
    fakes: &mut Fakes,
    tag: &str,
) -> Version {
    let mut own = BTreeMap::new();
    for c in customers {
        let mut connectors = BTreeMap::new();
        for connector in CONNECTORS {
            match rng.u8(..4) {
                0 => {}
                1 => {
                    connectors.insert(connector, None);
                }
                _ => {
                    let name = format!("{c}-{tag}-{connector}");
                    fakes.add(&name).await;
                    connectors.insert(connector, Some(name));
                }
            }
        }
        if !connectors.is_empty() {
            own.insert(c.clone(), connectors);
        }
    }
    Version {
        reject_unknown: rng.bool(),
        own,
    }
}

/// Writes `version`'s files into `dir`, removing the customers' files it no longer has.
fn write_version(dir: &TenantDir, version: &Version, fakes: &Fakes, customers: &[String]) {
    let files = version.files(fakes);
    for c in customers {
        if !files.iter().any(|(f, _)| f == c) && dir.path().join(format!("{c}.toml")).exists() {
            dir.remove(c);
        }
    }
    for (customer, text) in files {
        dir.write(&customer, &text);
    }
}

fn settings_of(h: &Harness, group: &str, fakes: &Fakes, dir: &TenantDir, v: &Version) -> Settings {
    let text = config(h, group, fakes, dir.path(), "");
    Settings::from_toml(&text, &lookup_for(v.reject_unknown), false)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Produces `events` round-robin over two partitions; adds to `ends` the records written.
fn produce(h: &Harness, events: &[TestEvent], ends: &mut [i64; 2]) {
    let records: Vec<(i32, Vec<u8>)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| ((i % 2) as i32, e.bytes.clone()))
        .collect();
    for (p, _) in &records {
        ends[*p as usize] += 1;
    }
    h.broker.produce(TOPIC, records);
}

/// As [`produce`], but packing runs of one to five events into records: one event as its
/// object, more as a JSON array, so one record mixes customers (each member is resolved by
/// its own `customer_code`).
fn produce_packed(h: &Harness, rng: &mut fastrand::Rng, events: &[TestEvent], ends: &mut [i64; 2]) {
    let mut records = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        let (run, tail) = rest.split_at(rng.usize(1..=5).min(rest.len()));
        rest = tail;
        let bytes = match run {
            [one] => one.bytes.clone(),
            _ => {
                let members: Vec<&[u8]> = run.iter().map(|e| e.bytes.as_slice()).collect();
                [b"[".as_slice(), &members.join(&b","[..]), b"]"].concat()
            }
        };
        let p = records.len() % 2;
        ends[p] += 1;
        records.push((p as i32, bytes));
    }
    h.broker.produce(TOPIC, records);
}

fn committed_to(pipeline: &Pipeline, ends: [i64; 2]) -> bool {
    tokio::task::block_in_place(|| {
        pipeline.wait_for_source(PATIENCE, |s| {
            let c = committed_by_partition(&s.committed);
            (0..2).all(|p| c.get(&p) == Some(&ends[p as usize]))
        })
    })
}

/// Adds to `expected` where each of `events` goes under `version`; returns how many event
/// deliveries are refused for want of a tenant.
fn expect(expected: &mut Expected, version: &Version, events: &[TestEvent]) -> u64 {
    let mut refused = 0;
    for TestEvent {
        id, customer, list, ..
    } in events
    {
        for connector in list {
            match version.place(customer.as_deref(), connector) {
                Place::Fake(fake) => {
                    expected.entry(fake).or_default().insert(id.clone());
                }
                Place::Off => {}
                Place::Refused => refused += 1,
            }
        }
    }
    refused
}

fn refused_no_tenant(pipeline: &Pipeline) -> u64 {
    [SPLUNK, DD]
        .iter()
        .map(|id| {
            let stats = pipeline.connector_stats(id).unwrap();
            stats
                .rejections()
                .into_iter()
                .filter(|(reason, _)| reason == "no_tenant")
                .map(|(_, n)| n)
                .sum::<u64>()
        })
        .sum()
}

/// The property: over random customers, tenant files, connector lists, unknown-customer
/// policies and a reload between two batches of events, every fake receives exactly the
/// events of the customers it belongs to (the default fakes: those of customers without
/// settings of their own), each once; a strict fake refuses any other credential, so an
/// event sent to the right place with the wrong token would be missing too. Refusals for
/// want of a tenant are exactly those expected. Events are packed one to five to a record,
/// so array records mix customers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_customers_event_ever_reaches_another_customers_endpoint_or_credentials() {
    for seed in 1..=4u64 {
        leakage_case(seed).await;
    }
}

async fn leakage_case(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (h, dir, mut fakes) = rig(&format!("leak-{seed}"), &[]).await;
    let tenants: Vec<String> = (0..rng.usize(2..=4)).map(|i| format!("cust-{i}")).collect();
    // Customers that never have a file, besides the events with no customer at all.
    let mut customers = tenants.clone();
    customers.push("stranger".into());

    let first = random_version(&mut rng, &tenants, &mut fakes, "v1").await;
    write_version(&dir, &first, &fakes, &tenants);
    let group = format!("g-leak-{seed}");
    let pipeline = Pipeline::start(&settings_of(&h, &group, &fakes, &dir, &first))
        .await
        .unwrap();
    let mut expected = Expected::new();
    let mut ends = [0i64; 2];
    let batch = events(&mut rng, "leak-a", 150, &customers);
    let mut refused = expect(&mut expected, &first, &batch);
    produce_packed(&h, &mut rng, &batch, &mut ends);
    assert!(
        committed_to(&pipeline, ends),
        "seed {seed}: {:?}",
        pipeline.source_status()
    );

    // A reload: new fakes for some, others dropped, the policy perhaps changed.
    let second = random_version(&mut rng, &tenants, &mut fakes, "v2").await;
    write_version(&dir, &second, &fakes, &tenants);
    pipeline.reload(&settings_of(&h, &group, &fakes, &dir, &second));
    let batch = events(&mut rng, "leak-b", 150, &customers);
    refused += expect(&mut expected, &second, &batch);
    produce_packed(&h, &mut rng, &batch, &mut ends);
    assert!(
        committed_to(&pipeline, ends),
        "seed {seed}: {:?}",
        pipeline.source_status()
    );

    let received = fakes.received();
    for (fake, ids) in &received {
        let got: BTreeSet<String> = ids.iter().cloned().collect();
        let want = expected.get(fake).cloned().unwrap_or_default();
        assert_eq!(
            got.len(),
            ids.len(),
            "seed {seed}: {fake} received an event twice"
        );
        assert_eq!(
            got,
            want,
            "seed {seed}: {fake} received {} events, expected {} (versions {first:?} then {second:?})",
            got.len(),
            want.len()
        );
    }
    assert_eq!(refused_no_tenant(&pipeline), refused, "seed {seed}");
    pipeline.shutdown().await;
}

/// A customer's HEC is down: its instance detaches and parks its events, while another
/// customer's HEC, and the connector's own, get every event and the commit point reaches
/// the end. When it answers again, its parked events are drained to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customers_outage_touches_only_that_customers_instance() {
    let (h, dir, fakes) = rig("outage", &["down-hec", "up-hec", "refusing-hec"]).await;
    let version = Version {
        reject_unknown: false,
        own: BTreeMap::from([
            (
                "down".to_string(),
                BTreeMap::from([("hec", Some("down-hec".to_string()))]),
            ),
            (
                "up".to_string(),
                BTreeMap::from([("hec", Some("up-hec".to_string()))]),
            ),
        ]),
    };
    write_version(&dir, &version, &fakes, &[]);
    // A customer whose file names a token its HEC does not accept: its events are refused.
    dir.write(
        "refusing",
        &format!(
            "[connectors.{SPLUNK}]\nendpoint = \"{}\"\ntoken = \"${{SECRET_WRONG}}\"\n",
            fakes.url("refusing-hec")
        ),
    );
    let parking = "g-tenant-outage-parked";
    h.broker.create_topic(parking, 2).unwrap();
    let extra = format!("[parking]\ntopic = \"{parking}\"");
    let text = config(&h, "g-tenant-outage", &fakes, dir.path(), &extra).replace(
        "index = \"qoe\"\ntimeout_secs = 5",
        "index = \"qoe\"\ntimeout_secs = 5\ndetach_after_secs = 1",
    );
    let settings =
        Settings::from_toml(&text, &lookup_for(false), false).unwrap_or_else(|e| panic!("{e}"));
    fakes.hec["down-hec"].fail_randomly(1000);
    let pipeline = Pipeline::start(&settings).await.unwrap();

    let mut rng = fastrand::Rng::with_seed(7);
    let customers = ["down", "up", "refusing", "other"].map(String::from);
    let batch: Vec<_> = events(&mut rng, "outage", 600, &customers)
        .into_iter()
        // Every event to HEC, so that each customer's share is known.
        .map(to_hec_only)
        .collect();
    let mut expected = Expected::new();
    // The refused customer's file is not part of `version`: its events are expected nowhere.
    let accepted: Vec<_> = batch
        .iter()
        .filter(|e| e.customer.as_deref() != Some("refusing"))
        .cloned()
        .collect();
    expect(&mut expected, &version, &accepted);
    let mut ends = [0i64; 2];
    produce(&h, &batch, &mut ends);

    assert!(
        committed_to(&pipeline, ends),
        "{:?}",
        pipeline.source_status()
    );
    let received = fakes.received();
    for fake in ["up-hec", "default-hec"] {
        let got: BTreeSet<String> = received[fake].iter().cloned().collect();
        assert_eq!(got, expected[fake], "{fake}");
    }
    assert!(received["down-hec"].is_empty());
    // The refused customer's events are finished as refusals, and only theirs.
    let refusing = batch
        .iter()
        .filter(|e| e.customer.as_deref() == Some("refusing"))
        .count() as u64;
    assert!(refusing > 0);
    assert!(received["refusing-hec"].is_empty());
    assert_eq!(
        pipeline
            .connector_stats(SPLUNK)
            .unwrap()
            .snapshot()
            .rejected,
        refusing
    );
    assert_eq!(
        pipeline.instance_state(SPLUNK, Some("down")),
        Some(State::Detached)
    );
    assert_eq!(pipeline.instance_state(SPLUNK, None), Some(State::Flowing));
    assert_eq!(
        pipeline.instance_state(SPLUNK, Some("up")),
        Some(State::Flowing)
    );
    // Visible per customer (the label limit is 3: each customer with a file has series).
    switchyard::admin::prometheus();
    let (addr, _server) =
        switchyard::admin::serve("127.0.0.1:0".parse().unwrap(), pipeline.monitor())
            .await
            .unwrap();
    let (_, text) = switchyard_testkit::probe::http_get(&addr.to_string(), "/metrics").await;
    for line in [
        format!(
            "switchyard_customer_instance_state{{connector=\"{SPLUNK}\",customer=\"down\",state=\"detached\"}} 1"
        ),
        format!(
            "switchyard_customer_instance_state{{connector=\"{SPLUNK}\",customer=\"up\",state=\"flowing\"}} 1"
        ),
        format!("switchyard_customer_instances{{connector=\"{SPLUNK}\"}} 3"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let routed_up = switchyard_testkit::probe::metric(
        &text,
        &format!(
            "switchyard_customer_events_routed_total{{connector=\"{SPLUNK}\",customer=\"up\"}}"
        ),
    );
    assert_eq!(routed_up, Some(expected["up-hec"].len() as f64));

    // Back up: what it missed is drained to it, once.
    fakes.hec["down-hec"].fail_randomly(0);
    let want = expected["down-hec"].len() as u64;
    assert!(
        fakes.hec["down-hec"]
            .wait_for_received(want, PATIENCE)
            .await
    );
    let got: Vec<String> = fakes.received()["down-hec"].clone();
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(unique, expected["down-hec"]);
    assert!(until(|| pipeline.instance_state(SPLUNK, Some("down")) == Some(State::Flowing)).await);
    pipeline.shutdown().await;
}

/// A reload while events flow: a customer's token and endpoint change under load. Every
/// event of that customer reaches its old or its new endpoint, exactly once, and the other
/// customer's reach only its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_stream_loses_and_duplicates_nothing() {
    let (h, dir, fakes) = rig("midstream", &["a-old-hec", "a-new-hec", "b-hec"]).await;
    let version = |a: &str| Version {
        reject_unknown: true,
        own: BTreeMap::from([
            (
                "a".to_string(),
                BTreeMap::from([("hec", Some(a.to_string()))]),
            ),
            (
                "b".to_string(),
                BTreeMap::from([("hec", Some("b-hec".to_string()))]),
            ),
        ]),
    };
    let old = version("a-old-hec");
    write_version(&dir, &old, &fakes, &[]);
    let group = "g-tenant-midstream";
    let pipeline = Pipeline::start(&settings_of(&h, group, &fakes, &dir, &old))
        .await
        .unwrap();

    let mut rng = fastrand::Rng::with_seed(11);
    let customers = ["a".to_string(), "b".to_string()];
    let batch: Vec<_> = events(&mut rng, "mid", 1200, &customers)
        .into_iter()
        .filter(|e| e.customer.is_some())
        .map(to_hec_only)
        .collect();
    let mut ends = [0i64; 2];
    let (front, back) = batch.split_at(batch.len() / 2);
    produce(&h, front, &mut ends);
    // Reload as soon as the first of them arrive, while the rest are in flight.
    assert!(fakes.hec["a-old-hec"].wait_for_received(1, PATIENCE).await);
    let new = version("a-new-hec");
    write_version(&dir, &new, &fakes, &[]);
    let reloaded = pipeline.reload(&settings_of(&h, group, &fakes, &dir, &new));
    assert_eq!(reloaded.replaced, 1, "only customer a's instance changed");
    produce(&h, back, &mut ends);
    assert!(
        committed_to(&pipeline, ends),
        "{:?}",
        pipeline.source_status()
    );

    let received = fakes.received();
    let of = |c: &str| -> BTreeSet<String> {
        batch
            .iter()
            .filter(|e| e.customer.as_deref() == Some(c))
            .map(|e| e.id.clone())
            .collect()
    };
    let a: Vec<String> = received["a-old-hec"]
        .iter()
        .chain(&received["a-new-hec"])
        .cloned()
        .collect();
    let a_set: BTreeSet<String> = a.iter().cloned().collect();
    assert_eq!(a_set, of("a"));
    assert_eq!(a.len(), a_set.len(), "an event of a reached both endpoints");
    assert!(
        !received["a-new-hec"].is_empty(),
        "the new endpoint took over"
    );
    let b: BTreeSet<String> = received["b-hec"].iter().cloned().collect();
    assert_eq!(b, of("b"));
    assert_eq!(received["b-hec"].len(), b.len());
    assert!(received["default-hec"].is_empty());

    // Pointing [tenants] at another (empty) directory needs a restart: until then nothing
    // changes, and a's events still reach a's endpoint, never the connector's own.
    let elsewhere = TenantDir::new("midstream-elsewhere");
    let moved = config(&h, group, &fakes, elsewhere.path(), "");
    let moved = Settings::from_toml(&moved, &lookup_for(true), false).unwrap();
    let reloaded = pipeline.reload(&moved);
    assert_eq!(reloaded.replaced, 0);
    assert!(
        reloaded
            .need_restart
            .iter()
            .any(|s| s.starts_with("tenants.directory")),
        "{reloaded:?}"
    );
    let late: Vec<_> = batch
        .iter()
        .filter(|e| e.customer.as_deref() == Some("a"))
        .take(20)
        .cloned()
        .collect();
    produce(&h, &late, &mut ends);
    assert!(
        committed_to(&pipeline, ends),
        "{:?}",
        pipeline.source_status()
    );
    let before = received["a-new-hec"].len() as u64;
    assert_eq!(
        fakes.hec["a-new-hec"].received_count(),
        before + late.len() as u64
    );
    assert!(fakes.hec["default-hec"].received().is_empty());
    pipeline.shutdown().await;
}

/// Changing a file is enough: the watcher reloads it. A file that does not load is refused
/// whole, naming the file and the key, the running version stays, and the failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tenant_file_applies_live_and_a_broken_one_is_refused() {
    let (h, dir, fakes) = rig("watch", &["a-old-hec", "a-new-hec"]).await;
    let version = |a: &str| Version {
        reject_unknown: false,
        own: BTreeMap::from([(
            "a".to_string(),
            BTreeMap::from([("hec", Some(a.to_string()))]),
        )]),
    };
    write_version(&dir, &version("a-old-hec"), &fakes, &[]);
    let config_dir = TenantDir::new("watch-config");
    let config_file = config_dir.path().join("connectors.toml");
    std::fs::write(
        &config_file,
        config(&h, "g-tenant-watch", &fakes, dir.path(), ""),
    )
    .unwrap();
    let lookup = lookup_for(false);
    let settings = Settings::load(config_file.to_str().unwrap(), &lookup).unwrap();
    switchyard::admin::prometheus();
    let pipeline = Pipeline::start(&settings).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let to_a = |rng: &mut fastrand::Rng, run: &str| -> Vec<_> {
        events(rng, run, 40, &["a".to_string()])
            .into_iter()
            .filter(|e| e.customer.is_some() && e.list.contains(&"hec"))
            .collect::<Vec<_>>()
    };
    let mut ends = [0i64; 2];

    let watched = async {
        let first = to_a(&mut rng, "watch-a");
        produce(&h, &first, &mut ends);
        assert!(
            fakes.hec["a-old-hec"]
                .wait_for_received(first.len() as u64, PATIENCE)
                .await
        );

        // A broken file: refused, and a's events keep going to the old endpoint.
        dir.write("a", "[connectors.dz-connector-splunk]\nindex = 7\n");
        assert!(
            until(|| reload_failures() >= 1).await,
            "the broken file was not refused"
        );
        let second = to_a(&mut rng, "watch-b");
        produce(&h, &second, &mut ends);
        let want = (first.len() + second.len()) as u64;
        assert!(
            fakes.hec["a-old-hec"]
                .wait_for_received(want, PATIENCE)
                .await
        );

        // A good one: applied without a signal or a call.
        write_version(&dir, &version("a-new-hec"), &fakes, &[]);
        let third = to_a(&mut rng, "watch-c");
        // Sent only once the new instance runs; until then the file may not be read yet.
        assert!(
            until(|| reloads() >= 1).await,
            "the changed file was not reloaded"
        );
        produce(&h, &third, &mut ends);
        assert!(
            fakes.hec["a-new-hec"]
                .wait_for_received(third.len() as u64, PATIENCE)
                .await
        );
        assert_eq!(fakes.hec["a-old-hec"].received_count(), want);
    };
    tokio::select! {
        _ = switchyard::reload::serve(&config_file, &lookup, &pipeline) => unreachable!(),
        _ = watched => {}
    }
    pipeline.shutdown().await;
}

fn reload_failures() -> u64 {
    counter_value("switchyard_config_reload_failures_total")
}

fn reloads() -> u64 {
    counter_value("switchyard_config_reloads_total")
}

/// A counter of the process's Prometheus registry, 0 until first counted.
fn counter_value(name: &str) -> u64 {
    let text = switchyard::admin::prometheus().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
