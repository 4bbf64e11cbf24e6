//! Destinations behind a private CA, requiring a client certificate (mTLS), reached through an
//! explicit proxy, with the token read from a mounted file: a fake HEC serving TLS with a CA
//! generated for the test, and a CONNECT proxy that records its tunnels.

use switchyard::Pipeline;
use switchyard::settings::Settings;
use switchyard_core::Connector;
use switchyard_kinesis_firehose::KinesisFirehose;
use switchyard_splunk_hec::SplunkHec;
use switchyard_testkit::tls::Pki;
use switchyard_testkit::{ConnectProxy, FakeFirehose, FakeHec};
use switchyard_tests::*;

/// A HEC connector to `url`, its token from `${TEST_HEC_TOKEN}` unless `extra` names one.
fn hec_table(url: &str, extra: &str) -> String {
    let token = if extra.contains("token =") {
        String::new()
    } else {
        "token = \"${TEST_HEC_TOKEN}\"".into()
    };
    format!(
        r#"
[connectors.{SPLUNK}]
kind = "splunk_hec"
endpoint = "{url}"
{token}
index = "qoe"
timeout_secs = 5
{extra}
[connectors.{SPLUNK}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 50
"#
    )
}

/// `[tls]` lines trusting the test CA, and presenting its client certificate if `client`.
fn tls_lines(pki: &Pki, client: bool) -> String {
    let mut lines = format!(
        "[connectors.{SPLUNK}.tls]\nca_file = \"{}\"\ntrust_system_roots = false\n",
        pki.ca_file().display()
    );
    if client {
        lines.push_str(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.client_cert_file().display(),
            pki.client_key_file().display()
        ));
    }
    lines
}

/// Settings with the connector tables of `toml` and a `[kafka]` table nothing connects to.
fn settings(toml: &str) -> Settings {
    let text = format!("[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n{toml}");
    let lookup = |name: &str| (name == "TEST_HEC_TOKEN").then(|| TOKEN.to_string());
    Settings::from_toml(&text, &lookup, false).unwrap_or_else(|e| panic!("{e}"))
}

/// The HEC connector the settings in `toml` (connector tables only) would run.
fn connector(toml: &str) -> SplunkHec {
    let settings = settings(toml);
    let c = &settings.connectors[0];
    let Some(cfg) = c.kind.downcast_ref::<switchyard_splunk_hec::HecConfig>() else {
        panic!("not HEC")
    };
    SplunkHec::new(cfg, &c.client).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_an_mtls_destination_through_a_proxy_with_the_token_from_a_file() {
    let pki = Pki::generate();
    let hec = FakeHec::builder(TOKEN).tls(pki.server_config(true));
    let h = Harness::with_hec(2, hec).await;
    let proxy = ConnectProxy::start().await.unwrap();
    let token_file = pki.dir().join("hec-token");
    // As `kubectl create secret --from-file` of an `echo`ed token leaves it.
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        "token = \"${{file:{}}}\"\nproxy = \"{}\"\n{}",
        token_file.display(),
        proxy.url(),
        tls_lines(&pki, true)
    );
    let settings = h.settings_for("g-tls", &hec_table(&h.hec.url(), &extra));
    let produced = h.produce(events("tls", 40));
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        h.hec.wait_for_received(40, PATIENCE).await,
        "{:?} {:?}",
        pipeline.progress(),
        h.hec.violations()
    );
    assert!(pipeline.shutdown().await);

    assert!(h.hec.violations().is_empty(), "{:?}", h.hec.violations());
    assert_eq!(h.hec.received().len(), produced.len());
    assert_eq!(h.hec.tls_refused(), 0);
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "no tunnel went through the proxy");
    assert!(
        tunnels.iter().all(|t| *t == h.hec.addr().to_string()),
        "{tunnels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_destination_is_refused_at_the_handshake() {
    let pki = Pki::generate();
    let hec = FakeHec::builder(TOKEN)
        .tls(pki.server_config(false))
        .start()
        .await
        .unwrap();

    let untrusting = connector(&hec_table(&hec.url(), ""));
    let err = untrusting.health().await.unwrap_err();
    assert!(
        err.contains("connection failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(until(|| hec.tls_refused() == 1).await);

    let trusting = connector(&hec_table(&hec.url(), &tls_lines(&pki, false)));
    assert_eq!(trusting.health().await, Ok(()));
    assert_eq!(hec.tls_refused(), 1);
    assert_eq!(hec.received_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_requiring_mtls_refuses_a_connector_without_a_client_certificate() {
    let pki = Pki::generate();
    let hec = FakeHec::builder(TOKEN)
        .tls(pki.server_config(true))
        .start()
        .await
        .unwrap();

    let anonymous = connector(&hec_table(&hec.url(), &tls_lines(&pki, false)));
    let err = anonymous.health().await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    assert!(until(|| hec.tls_refused() >= 1).await);
    let refused = hec.tls_refused();

    let identified = connector(&hec_table(&hec.url(), &tls_lines(&pki, true)));
    assert_eq!(identified.health().await, Ok(()));
    assert_eq!(hec.tls_refused(), refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_proxy_carries_the_connection() {
    let pki = Pki::generate();
    let hec = FakeHec::builder(TOKEN)
        .tls(pki.server_config(false))
        .start()
        .await
        .unwrap();
    let proxy = ConnectProxy::start().await.unwrap();

    let proxied = format!("proxy = \"{}\"\n{}", proxy.url(), tls_lines(&pki, false));
    assert_eq!(
        connector(&hec_table(&hec.url(), &proxied)).health().await,
        Ok(())
    );
    assert_eq!(proxy.tunnels(), [hec.addr().to_string()]);
}

const FH: &str = "fh";

fn firehose_table(url: &str, extra: &str) -> String {
    format!(
        r#"
[connectors.{FH}]
kind = "kinesis_firehose"
delivery_stream = "qoe-stream"
region = "us-east-1"
endpoint = "{url}"
access_key_id = "AKIDFAKE"
secret_access_key = "testing-secret"
timeout_secs = 10
{extra}
[connectors.{FH}.retry]
initial_backoff_ms = 10
max_backoff_ms = 200
max_attempts = 20
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firehose_trusts_the_ca_file_and_goes_through_the_proxy() {
    let pki = Pki::generate();
    let fake = FakeFirehose::start_tls("qoe-stream", "AKIDFAKE", pki.server_config(false))
        .await
        .unwrap();
    let addr = fake.url().trim_start_matches("https://").to_string();

    // The AWS SDK's client, without the CA: refused at the handshake.
    let untrusting = settings(&firehose_table(&fake.url(), ""));
    let Some(cfg) = untrusting.connectors[0]
        .kind
        .downcast_ref::<switchyard_kinesis_firehose::FirehoseConfig>()
    else {
        panic!("not Firehose")
    };
    let connector = KinesisFirehose::new(cfg, &untrusting.connectors[0].client)
        .await
        .unwrap();
    assert!(connector.health().await.is_err());
    assert!(until(|| fake.tls_refused() == 1).await);

    let h = Harness::new(1).await;
    let proxy = ConnectProxy::start().await.unwrap();
    let extra = format!(
        "proxy = \"{}\"\n[connectors.{FH}.tls]\nca_file = \"{}\"\ntrust_system_roots = false",
        proxy.url(),
        pki.ca_file().display()
    );
    let produced = h.produce(events_to("fh-tls", 20, &[FH]));
    let settings = h.settings_for("g-fh-tls", &firehose_table(&fake.url(), &extra));
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(
        fake.wait_for_received(produced.len() as u64, PATIENCE)
            .await,
        "{:?} {:?}",
        pipeline.progress(),
        fake.violations()
    );
    assert!(pipeline.shutdown().await);

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    assert_eq!(fake.tls_refused(), 1);
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "no tunnel went through the proxy");
    assert!(tunnels.iter().all(|t| *t == addr), "{tunnels:?}");
}
