//! The standard proxy variables: a connector without `proxy` goes through `HTTPS_PROXY`, and
//! one with `proxy = "none"` goes straight to its destination. The variables belong to the
//! whole process, so this binary holds this one test alone.

use switchyard::settings::Settings;
use switchyard_core::Connector;
use switchyard_splunk_hec::SplunkHec;
use switchyard_testkit::tls::Pki;
use switchyard_testkit::{ConnectProxy, FakeHec};

const TOKEN: &str = "proxy-env-token";

fn connector(url: &str, pki: &Pki, proxy: &str) -> SplunkHec {
    let text = format!(
        r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.hec]
kind = "splunk_hec"
endpoint = "{url}"
token = "{TOKEN}"
{proxy}
[connectors.hec.tls]
ca_file = "{}"
"#,
        pki.ca_file().display()
    );
    let settings = Settings::from_toml(&text, &|_| None, false).unwrap_or_else(|e| panic!("{e}"));
    let c = &settings.connectors[0];
    let Some(cfg) = c.kind.downcast_ref::<switchyard_splunk_hec::HecConfig>() else {
        panic!("not HEC")
    };
    SplunkHec::new(cfg, &c.client).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn https_proxy_applies_unless_the_connector_says_none() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pki = Pki::generate();
        let hec = FakeHec::builder(TOKEN)
            .tls(pki.server_config(false))
            .start()
            .await
            .unwrap();
        let proxy = ConnectProxy::start().await.unwrap();
        // SAFETY: the only test in this process, and no thread of it reads the environment
        // while this writes it: the runtime's workers are idle, the clients not yet built.
        unsafe {
            for name in [
                "NO_PROXY",
                "no_proxy",
                "ALL_PROXY",
                "all_proxy",
                "https_proxy",
            ] {
                std::env::remove_var(name);
            }
            std::env::set_var("HTTPS_PROXY", proxy.url());
        }

        let from_env = connector(&hec.url(), &pki, "");
        assert_eq!(from_env.health().await, Ok(()));
        assert_eq!(proxy.tunnels(), [hec.addr().to_string()]);

        let direct = connector(&hec.url(), &pki, "proxy = \"none\"");
        assert_eq!(direct.health().await, Ok(()));
        assert_eq!(
            proxy.tunnels().len(),
            1,
            "proxy = \"none\" went through the proxy"
        );
    });
}
