use super::*;
use switchyard_kinesis_firehose::FirehoseConfig;
use switchyard_splunk_hec::HecConfig;

fn lookup(name: &str) -> Option<String> {
    match name {
        "SPLUNK_HEC_TOKEN" => Some("11111111-2222-3333-4444-555555555555".into()),
        "DD_API_KEY" | "NEW_RELIC_LICENSE_KEY" | "OTLP_API_KEY" => Some(format!("{name}-value")),
        "NEW_RELIC_ACCOUNT_ID" => Some("1234567".into()),
        "KAFKA_PASSWORD" => Some("env-kafka-p4ss".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Settings, Invalid> {
    Settings::from_toml(text, &lookup, false)
}

#[test]
fn the_repo_config_is_valid() {
    let s = load(include_str!("../../../../connectors.toml")).unwrap();
    assert_eq!(s.kafka.topics, ["qoe-events"]);
    assert_eq!(
        s.kafka
            .options
            .get("session.timeout.ms")
            .map(String::as_str),
        Some("45000")
    );
    let c = &s.connectors[0];
    assert_eq!(c.id, "dz-connector-splunk");
    assert_eq!(c.engine.limits.max_bytes, 1_000_000);
    let hec = c
        .kind
        .downcast_ref::<HecConfig>()
        .expect("the first connector is HEC");
    assert_eq!(
        hec.token.as_ref().unwrap().expose(),
        "11111111-2222-3333-4444-555555555555"
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // The repo config shows every kind this build knows, in the list's order.
    let kinds: Vec<&str> = s.connectors.iter().map(|c| c.kind.kind()).collect();
    let known: Vec<&str> = crate::destinations::DESTINATIONS
        .iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(kinds, known);
}

const BASE: &str = r#"
[kafka]
brokers = "k:9092"
topics = ["qoe"]
group_id = "g"
[connectors.hec]
kind = "splunk_hec"
endpoint = "https://hec:8088"
token = "${SPLUNK_HEC_TOKEN}"
"#;

#[test]
fn group_instance_id_is_optional_and_maps_to_static_membership() {
    assert_eq!(load(BASE).unwrap().kafka.group_instance_id, None);
    let with = BASE.replace(
        "group_id = \"g\"",
        "group_id = \"g\"\ngroup_instance_id = 7",
    );
    assert_eq!(
        load(&with).unwrap().kafka.group_instance_id.as_deref(),
        Some("7"),
        "a pod name that looks like a number is still a name"
    );
    let empty = BASE.replace(
        "group_id = \"g\"",
        "group_id = \"g\"\ngroup_instance_id = \" \"",
    );
    let keys: Vec<String> = load(&empty)
        .unwrap_err()
        .0
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(keys, ["kafka.group_instance_id"]);
}

#[test]
fn isolation_is_on_by_default_with_a_parking_topic_named_after_the_group() {
    let s = load(BASE).unwrap();
    assert!(s.parking.enabled);
    assert_eq!(s.parking.topic, "g-parked");
    assert_eq!(s.connectors[0].isolation, IsolationSettings::default());
    assert!(s.parking.note().contains("\"g-parked\"") && s.parking.note().contains("retention"));
    let repo = load(include_str!("../../../../connectors.toml")).unwrap();
    assert_eq!(repo.parking.topic, "qoe-events-parked");
}

#[test]
fn isolation_knobs_are_validated_with_their_key_paths() {
    let text = format!(
        "{BASE}detach_after_secs = 0\nprobe_max_interval_secs = 2\n[parking]\ntopic = \"qoe\"\n"
    );
    let keys: Vec<String> = load(&text)
        .unwrap_err()
        .0
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(
        keys,
        [
            "connectors.hec.detach_after_secs",
            "connectors.hec.probe_max_interval_secs",
            "parking.topic"
        ]
    );
    let text = format!("{BASE}detach_after_secs = 5\n[parking]\nenabled = false\n");
    let s = load(&text).unwrap();
    assert!(!s.parking.enabled);
    assert_eq!(
        s.connectors[0].isolation.detach_after,
        Duration::from_secs(5)
    );
}

#[test]
fn array_records_hold_at_most_max_array_members_and_at_least_one() {
    assert_eq!(load(BASE).unwrap().router.max_array_members, 1_000);
    let set = |n: &str| load(&format!("{BASE}[router]\nmax_array_members = {n}\n"));
    assert_eq!(set("50").unwrap().router.max_array_members, 50);
    let problems = set("0").unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "router.max_array_members");
}

#[test]
fn a_rate_limit_is_events_or_requests_per_second_and_at_least_one() {
    use switchyard_core::RateLimit;
    let s = load(&format!("{BASE}rate_limit = {{ events_per_sec = 500 }}\n")).unwrap();
    assert_eq!(
        s.connectors[0].engine.rate_limit,
        Some(RateLimit::EventsPerSec(500.try_into().unwrap()))
    );
    let s = load(&format!("{BASE}rate_limit = {{ requests_per_sec = 3 }}\n")).unwrap();
    assert_eq!(
        s.connectors[0].engine.rate_limit,
        Some(RateLimit::RequestsPerSec(3.try_into().unwrap()))
    );
    assert_eq!(load(BASE).unwrap().connectors[0].engine.rate_limit, None);
    for (limit, key) in [
        (
            "{ events_per_sec = 0 }",
            "connectors.hec.rate_limit.events_per_sec",
        ),
        (
            "{ events_per_sec = 1, requests_per_sec = 1 }",
            "connectors.hec.rate_limit",
        ),
        ("{}", "connectors.hec.rate_limit"),
    ] {
        let problems = load(&format!("{BASE}rate_limit = {limit}\n"))
            .unwrap_err()
            .0;
        assert_eq!(problems.len(), 1, "{limit}: {problems:?}");
        assert_eq!(problems[0].path, key, "{limit}");
    }
}

#[test]
fn sampling_takes_a_rate_and_a_key_checked_with_their_key_paths() {
    let filter = |s: &Settings| s.connectors[0].filter.sample.clone();
    assert_eq!(filter(&load(BASE).unwrap()), None);
    let s = load(&format!("{BASE}sample_rate = 0.25\n")).unwrap();
    let sample = filter(&s).unwrap();
    assert_eq!(
        (sample.rate(), sample.key()),
        (0.25, "user_details.content_session_id")
    );
    let s = load(&format!("{BASE}sample_rate = 1\nsample_key = \"a.b\"\n")).unwrap();
    let sample = filter(&s).unwrap();
    assert_eq!((sample.rate(), sample.key()), (1.0, "a.b"));
    for (keys, path) in [
        ("sample_rate = 0", "connectors.hec.sample_rate"),
        ("sample_rate = 1.5", "connectors.hec.sample_rate"),
        ("sample_rate = -0.5", "connectors.hec.sample_rate"),
        (
            "sample_rate = 0.5\nsample_key = \"a..b\"",
            "connectors.hec.sample_key",
        ),
        ("sample_key = \"a.b\"", "connectors.hec.sample_key"),
    ] {
        let problems = load(&format!("{BASE}{keys}\n")).unwrap_err().0;
        assert_eq!(problems.len(), 1, "{keys}: {problems:?}");
        assert_eq!(problems[0].path, path, "{keys}");
    }
}

#[test]
fn field_selection_is_read_and_checked_with_its_key_paths() {
    assert_eq!(load(BASE).unwrap().connectors[0].engine.fields, None);
    // Empty: nothing to change, so the raw event goes.
    let s = load(&format!("{BASE}fields = {{}}\n")).unwrap();
    assert_eq!(s.connectors[0].engine.fields, None);
    let text = format!(
        "{BASE}fields = {{ include = [\"event\", \"user_details\"], exclude = [\"user_details.client_ip\"], rename = {{ \"event.Type\" = \"Event_Type\" }}, add = {{ env = \"prod\", \"meta.n\" = 2 }} }}\n"
    );
    let s = load(&text).unwrap();
    let fields = s.connectors[0].engine.fields.clone().expect("fields");
    let mut out = Vec::new();
    fields
        .apply(
            br#"{"event":{"Type":"t","x":1},"user_details":{"client_ip":"1.2.3.4","id":"u"},"other":1}"#,
            &[],
            &mut out,
        )
        .unwrap();
    // Keys keep their case, and the file's order of `add`.
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"event":{"x":1},"user_details":{"id":"u"},"Event_Type":"t","env":"prod","meta":{"n":2}}"#
    );
    for (table, path) in [
        (
            "{ include = [\"a..b\"] }",
            "connectors.hec.fields.include[0]",
        ),
        ("{ exclude = [\"\"] }", "connectors.hec.fields.exclude[0]"),
        (
            "{ rename = { a = \"x\", b = \"x.y\" } }",
            "connectors.hec.fields.rename.\"b\"",
        ),
        (
            "{ rename = { a = \"x\" }, add = { x = 1 } }",
            "connectors.hec.fields.add.\"x\"",
        ),
        ("{ drop = [\"a\"] }", "connectors.hec.fields"),
    ] {
        let problems = load(&format!("{BASE}fields = {table}\n")).unwrap_err().0;
        assert_eq!(problems.len(), 1, "{table}: {problems:?}");
        assert!(problems[0].path.starts_with(path), "{table}: {problems:?}");
    }
}

#[test]
fn health_checks_and_the_stall_limit_default_and_are_validated_with_their_key_paths() {
    let s = load(BASE).unwrap();
    assert_eq!(s.connectors[0].engine.health_check, HealthCheck::default());
    assert_eq!(s.admin.stall_after, Duration::from_secs(120));

    let text = format!(
        "{BASE}[connectors.hec.health_check]\nenabled = false\ninterval_secs = 3\n[admin]\nstall_after_secs = 400\n"
    );
    let s = load(&text).unwrap();
    let check = s.connectors[0].engine.health_check;
    assert!(!check.enabled);
    assert_eq!(check.interval, Duration::from_secs(3));
    assert_eq!(s.admin.stall_after, Duration::from_secs(400));

    // Unset, the limit keeps its margin over a long revoke wait.
    let long_revoke = BASE.replace(
        "group_id = \"g\"",
        "group_id = \"g\"\nrevoke_drain_timeout_secs = 300",
    );
    assert_eq!(
        load(&long_revoke).unwrap().admin.stall_after,
        Duration::from_secs(360)
    );

    let text = format!(
        "{long_revoke}[connectors.hec.health_check]\ninterval_secs = 0\nevery = 5\n[admin]\nstall_after_secs = 300\n"
    );
    let problems = load(&text).unwrap_err().0;
    let keys: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "connectors.hec.health_check.every",
            "admin.stall_after_secs"
        ],
        "{problems:?}"
    );
    assert!(problems[1].message.contains("at least 360"), "{problems:?}");
    let text = format!("{BASE}[connectors.hec.health_check]\ninterval_secs = 0\n");
    let keys: Vec<String> = load(&text)
        .unwrap_err()
        .0
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(keys, ["connectors.hec.health_check.interval_secs"]);
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let s = load(include_str!("../../../../connectors.toml")).unwrap();
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("11111111") && !debug.contains("-value"),
        "{debug}"
    );
}

#[test]
fn every_problem_is_listed_with_its_key_path() {
    let text = r#"
[kafka]
brokers = ""
topics = ["t"]
group_id = "g"
[router]
default_connectors = ["nowhere"]
[connectors.a]
kind = "splunk_hec"
endpoint = "not a url"
[connectors.b]
kind = "carrier_pigeon"
[connectors.c]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "${NOT_SET_ANYWHERE}"
[connectors.c.batch]
max_events = 0
[connectors.d]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "x"
colour = "blue"
"#;
    let problems = load(text).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "kafka.brokers",
        "router.default_connectors[0]",
        "connectors.a.endpoint",
        "connectors.a.token",
        "connectors.b.kind",
        "connectors.c.token",
        "connectors.c.batch.max_events",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let msg = |path: &str| {
        problems
            .iter()
            .find(|p| p.path == path)
            .unwrap()
            .message
            .clone()
    };
    assert!(msg("connectors.c.token").contains("NOT_SET_ANYWHERE"));
    assert!(msg("connectors.b.kind").contains("carrier_pigeon"));
    assert!(
        problems
            .iter()
            .any(|p| p.path.starts_with("connectors.d") && p.message.contains("colour"))
    );
}

#[test]
fn a_batch_limit_over_the_apis_is_a_warning_naming_the_limit_used() {
    let text = format!(
        "{BASE}[connectors.dd]\nkind = \"datadog_logs\"\napi_key = \"${{DD_API_KEY}}\"\n\
         [connectors.dd.batch]\nmax_bytes = 20000000\nmax_events = 10\n"
    );
    let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let hard = switchyard_datadog_logs::config::HARD_LIMITS;
    assert_eq!(
        s.warnings,
        [Problem::new(
            "connectors.dd.batch.max_bytes",
            &format!(
                "20000000 is over what datadog_logs allows; {} is used",
                hard.max_bytes
            )
        )]
    );
}

#[test]
fn overrides_set_dotted_keys_in_nested_tables() {
    let mut t = serde_json::json!({"endpoint": "a", "headers": {"x": "1"}});
    set_dotted(&mut t, "endpoint", "b".into());
    set_dotted(&mut t, "headers.x-api-key", "k".into());
    set_dotted(&mut t, "new.table.key", "v".into());
    assert_eq!(
        t,
        serde_json::json!({
            "endpoint": "b",
            "headers": {"x": "1", "x-api-key": "k"},
            "new": {"table": {"key": "v"}}
        })
    );
}

#[test]
fn batch_and_retry_defaults_come_from_the_kind_and_policy() {
    let s = load(
        "[kafka]\nbrokers=\"b:9092\"\ntopics=[\"t\"]\ngroup_id=\"g\"\n[connectors.x]\nkind=\"splunk_hec\"\nendpoint=\"http://h\"\ntoken=\"t\"\n[connectors.x.batch]\nmax_linger_ms = 5\n",
    )
    .unwrap();
    let e = &s.connectors[0].engine;
    assert_eq!(
        e.limits.max_bytes,
        switchyard_splunk_hec::config::DEFAULT_LIMITS.max_bytes
    );
    assert_eq!(e.limits.max_linger, Duration::from_millis(5));
    assert_eq!(e.retry, RetryPolicy::default());
}

#[test]
fn datadog_and_new_relic_settings_are_checked() {
    let text = r#"
[kafka]
brokers = "b:9092"
topics = ["t"]
group_id = "g"
[connectors.dd]
kind = "datadog_logs"
site = "mars1"
tags = ["a:b,c:d"]
[connectors.nr]
kind = "newrelic_events"
account_id = "my-account"
event_type = "Qoe.Event"
arrays = "sometimes"
[connectors.nr2]
kind = "newrelic_events"
account_id = "42"
license_key = "x"
insert_key = "y"
[connectors.fh]
kind = "kinesis_firehose"
delivery_stream = ""
endpoint_url = "localhost:4566"
access_key_id = "AKID"
"#;
    let problems = load(text).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "connectors.dd.site",
        "connectors.dd.api_key",
        "connectors.dd.tags",
        "connectors.nr.arrays",
        "connectors.nr2.insert_key",
        "connectors.fh.delivery_stream",
        "connectors.fh.endpoint_url",
        "connectors.fh.secret_access_key",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let text = text.replace("arrays = \"sometimes\"", "");
    let problems = load(&text).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "connectors.nr.account_id",
        "connectors.nr.license_key",
        "connectors.nr.event_type",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

const KAFKA: &str = "[kafka]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\n";

/// One connector of each kind taking its secrets (and its URL or account) from variables
/// that no test environment sets.
fn every_kind_from_unset_variables(enabled: bool) -> String {
    format!(
        r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
enabled = {enabled}
endpoint = "${{UNSET_HEC_URL}}"
token = "${{UNSET_HEC_TOKEN}}"
[connectors.dd]
kind = "datadog_logs"
enabled = {enabled}
api_key = "${{UNSET_DD_API_KEY}}"
[connectors.nr]
kind = "newrelic_events"
enabled = {enabled}
account_id = "${{UNSET_NR_ACCOUNT_ID}}"
license_key = "${{UNSET_NR_LICENSE_KEY}}"
[connectors.fh]
kind = "kinesis_firehose"
enabled = {enabled}
delivery_stream = "s"
access_key_id = "${{UNSET_FH_ACCESS_KEY_ID}}"
secret_access_key = "${{UNSET_FH_SECRET_ACCESS_KEY}}"
"#
    )
}

#[test]
fn a_disabled_connector_needs_none_of_its_variables() {
    let s = load(&every_kind_from_unset_variables(false)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.connectors.len(), 4);
    assert!(s.connectors.iter().all(|c| !c.enabled));
    // Enabling it later (replay does) must not go ahead without them.
    let hec = s.connectors.iter().find(|c| c.id == "hec").unwrap();
    let err = hec.runnable().unwrap_err().to_string();
    assert!(
        err.contains("connectors.hec.token: environment variable UNSET_HEC_TOKEN is not set")
            && err.contains("connectors.hec.endpoint"),
        "{err}"
    );
    let fh = s.connectors.iter().find(|c| c.id == "fh").unwrap();
    assert_eq!(fh.runnable().unwrap_err().0.len(), 2);
}

#[test]
fn a_disabled_connectors_other_mistakes_are_still_reported() {
    let text = format!(
        r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
enabled = false
endpoint = "ftp://nowhere"
token = "${{UNSET_HEC_TOKEN}}"
[connectors.hec2]
kind = "splunk_hec"
enabled = false
endpoint = "http://hec:8088"
token = "${{UNSET_HEC_TOKEN}}"
colour = "blue"
[connectors.dd]
kind = "datadog_logs"
enabled = false
site = "mars1"
api_key = "${{UNSET_DD_API_KEY}}"
concurrency = 0
"#
    );
    let problems = load(&text).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "connectors.hec.endpoint",
        "connectors.dd.site",
        "connectors.dd.concurrency",
    ] {
        assert!(paths.contains(&want), "{want} missing from {problems:?}");
    }
    assert!(
        problems
            .iter()
            .any(|p| p.path.starts_with("connectors.hec2") && p.message.contains("colour")),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.path.ends_with(".token")
            || p.path.ends_with(".api_key")
            || p.message.contains("UNSET_")),
        "{problems:?}"
    );
}

#[test]
fn an_unset_variable_is_the_only_problem_of_its_key() {
    let text = every_kind_from_unset_variables(true)
        .replace("brokers = \"b:9092\"", "brokers = \"${UNSET_BROKERS}\"");
    let problems = load(&text).unwrap_err().0;
    for (path, var) in [
        ("kafka.brokers", "UNSET_BROKERS"),
        ("connectors.hec.endpoint", "UNSET_HEC_URL"),
        ("connectors.hec.token", "UNSET_HEC_TOKEN"),
        ("connectors.dd.api_key", "UNSET_DD_API_KEY"),
        ("connectors.nr.account_id", "UNSET_NR_ACCOUNT_ID"),
        ("connectors.nr.license_key", "UNSET_NR_LICENSE_KEY"),
        ("connectors.fh.access_key_id", "UNSET_FH_ACCESS_KEY_ID"),
        (
            "connectors.fh.secret_access_key",
            "UNSET_FH_SECRET_ACCESS_KEY",
        ),
    ] {
        let at: Vec<&Problem> = problems.iter().filter(|p| p.path == path).collect();
        assert_eq!(at.len(), 1, "{path}: {at:?}");
        assert_eq!(
            at[0].message,
            format!("environment variable {var} is not set")
        );
    }
    assert_eq!(problems.len(), 8, "{problems:?}");
}

fn firehose(keys: &str) -> String {
    format!(
        "{KAFKA}[connectors.fh]\nkind = \"kinesis_firehose\"\ndelivery_stream = \"s\"\n{keys}\n"
    )
}

fn firehose_endpoint(s: &Settings) -> Option<String> {
    let kind = &s.connectors[0].kind;
    let Some(c) = kind.downcast_ref::<FirehoseConfig>() else {
        panic!("not Firehose: {kind:?}")
    };
    c.endpoint.clone()
}

#[test]
fn firehose_takes_endpoint_like_the_others_and_endpoint_url_with_a_warning() {
    let s =
        load(&firehose("endpoint = \"http://localhost:4566\"")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        firehose_endpoint(&s).as_deref(),
        Some("http://localhost:4566")
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    let s = load(&firehose("endpoint_url = \"http://localhost:4566\""))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        firehose_endpoint(&s).as_deref(),
        Some("http://localhost:4566")
    );
    assert_eq!(
        s.warnings,
        [Problem::new(
            "connectors.fh.endpoint_url",
            "is deprecated; call it endpoint, as the other connectors do"
        )]
    );

    let problems = load(&firehose(
        "endpoint = \"http://a:4566\"\nendpoint_url = \"http://b:4566\"",
    ))
    .unwrap_err()
    .0;
    assert_eq!(
        problems.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(),
        ["connectors.fh.endpoint_url"],
        "{problems:?}"
    );

    // A bad value is reported under the name the file gives it.
    for key in ["endpoint", "endpoint_url"] {
        let problems = load(&firehose(&format!("{key} = \"localhost:4566\"")))
            .unwrap_err()
            .0;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, format!("connectors.fh.{key}"));
    }
}

#[test]
fn the_repo_configs_commented_out_overrides_are_valid() {
    let examples = [
        "endpoint = ",
        "access_key_id = ",
        "secret_access_key = ",
        "role_arn = ",
        "sample_rate = ",
        "sample_key = ",
        "fields = ",
    ];
    let text: Vec<&str> = include_str!("../../../../connectors.toml")
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if examples.iter().any(|k| rest.starts_with(k)) => rest,
            _ => l,
        })
        .collect();
    let lookup = |name: &str| {
        lookup(name).or_else(|| name.starts_with("FIREHOSE_").then(|| format!("{name}-x")))
    };
    let text = text.join("\n");
    let s = Settings::from_toml(&text, &lookup, false).unwrap_or_else(|e| panic!("{e}"));
    let tree = read_tree(&text, false).unwrap_or_else(|e| panic!("{e}"));
    for c in &s.connectors {
        assert!(
            tree["connectors"][&c.id]["endpoint"].is_string(),
            "{} has no endpoint example",
            c.id
        );
    }
    // Every example is there to be tried: each key shows in some connector once uncommented.
    for key in examples.map(|k| k.trim_end_matches(" = ")) {
        assert!(
            s.connectors
                .iter()
                .any(|c| !tree["connectors"][&c.id][key].is_null()),
            "no commented-out {key} example"
        );
    }
    // The examples take their secrets from variables and use no deprecated key.
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn a_secret_written_in_the_file_is_a_warning_without_its_value() {
    let text = format!(
        r#"{KAFKA}
[connectors.hec]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "literal-hec-token"
[connectors.by-reference]
kind = "splunk_hec"
endpoint = "http://hec:8088"
token = "${{SPLUNK_HEC_TOKEN}}"
[connectors.dd]
kind = "datadog_logs"
api_key = "literal-dd-key"
[connectors.dd-number]
kind = "datadog_logs"
api_key = 4242424242
[connectors.nr]
kind = "newrelic_events"
account_id = "42"
license_key = "literal-nr-license"
[connectors.nr-insert]
kind = "newrelic_events"
account_id = "42"
insert_key = "literal-nr-insert"
[connectors.fh]
kind = "kinesis_firehose"
delivery_stream = "s"
access_key_id = "literal-fh-akid"
secret_access_key = "literal-fh-secret"
[connectors.otlp]
kind = "otlp_logs"
endpoint = "https://otlp:4318/v1/logs"
[connectors.otlp.headers]
x-api-key = "literal-otlp-key"
x-by-reference = "${{DD_API_KEY}}"
"#
    );
    let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let paths: Vec<&str> = s.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "connectors.hec.token",
            "connectors.dd.api_key",
            "connectors.dd-number.api_key",
            "connectors.nr.license_key",
            "connectors.nr-insert.insert_key",
            "connectors.fh.access_key_id",
            "connectors.fh.secret_access_key",
            "connectors.otlp.headers.x-api-key",
        ]
    );
    assert!(
        s.warnings[7]
            .message
            .contains("SWITCHYARD__CONNECTORS__OTLP__HEADERS__X-API-KEY"),
        "{}",
        s.warnings[7]
    );
    assert!(
        s.warnings[0]
            .message
            .contains("SWITCHYARD__CONNECTORS__HEC__TOKEN"),
        "{}",
        s.warnings[0]
    );
    let shown = format!("{:?}", s.warnings);
    assert!(
        !shown.contains("literal-") && !shown.contains("4242424242"),
        "{shown}"
    );
}

/// A directory of this test's own for secret files, removed when dropped.
struct SecretDir(std::path::PathBuf);

impl SecretDir {
    fn new(test: &str) -> SecretDir {
        let dir =
            std::env::temp_dir().join(format!("switchyard-settings-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        SecretDir(dir)
    }

    /// Writes `text` to `name`; the path, as a `${file:…}` reference would give it.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn any_value_can_come_from_a_file_without_its_trailing_newline() {
    let dir = SecretDir::new("from-file");
    let token = dir.file("hec-token", "file-hec-token\n");
    let sasl = dir.file("sasl-password", "file-kafka-p4ss\r\n");
    let key_password = dir.file("key-password", "two-lines\n\n");
    let text = format!(
        r#"{KAFKA}
[kafka.options]
"security.protocol" = "SASL_SSL"
"sasl.password" = "${{file:{sasl}}}"
[dead_letter]
topic = "dead"
[dead_letter.options]
"sasl.password" = "${{KAFKA_PASSWORD}}"
[parking.options]
"ssl.key.password" = "${{file:{key_password}}}"
[connectors.hec]
kind = "splunk_hec"
endpoint = "https://hec:8088"
token = "${{file:{token}}}"
"#
    );
    let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let Some(hec) = s.connectors[0].kind.downcast_ref::<HecConfig>() else {
        panic!("HEC")
    };
    assert_eq!(hec.token.as_ref().unwrap().expose(), "file-hec-token");
    assert_eq!(s.kafka.options["sasl.password"], "file-kafka-p4ss");
    assert_eq!(s.dead_letter.options["sasl.password"], "env-kafka-p4ss");
    // Only the one newline a file ends with is not part of the secret.
    assert_eq!(s.parking.options["ssl.key.password"], "two-lines\n");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let debug = format!("{s:?}");
    for secret in [
        "file-hec-token",
        "file-kafka-p4ss",
        "env-kafka-p4ss",
        "two-lines",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("SASL_SSL"), "{debug}");
}

#[test]
fn an_unreadable_secret_file_is_a_problem_of_its_key_unless_the_connector_is_disabled() {
    let missing = "/nonexistent/switchyard/secret";
    let text = |enabled: bool| {
        format!(
            r#"{KAFKA}
[kafka.options]
"sasl.password" = "${{file:{missing}}}"
[connectors.hec]
kind = "splunk_hec"
enabled = {enabled}
endpoint = "https://hec:8088"
token = "${{file:{missing}}}"
"#
        )
    };
    let problems = load(&text(true)).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["kafka.options.sasl.password", "connectors.hec.token"],
        "{problems:?}"
    );
    assert!(
        problems[1]
            .message
            .starts_with(&format!("file {missing} cannot be read: ")),
        "{problems:?}"
    );

    let disabled = text(false).replace(&format!("${{file:{missing}}}\"\n["), "x\"\n[");
    let s = load(&disabled).unwrap_or_else(|e| panic!("{e}"));
    let err = s.connectors[0].runnable().unwrap_err().to_string();
    assert!(
        err.contains("connectors.hec.token: file /nonexistent/switchyard/secret"),
        "{err}"
    );
}

#[test]
fn a_kafka_credential_written_in_the_file_is_a_warning_without_its_value() {
    let text = format!(
        r#"{KAFKA}
[kafka.options]
"sasl.username" = "router"
"sasl.password" = "literal-kafka-p4ss"
"session.timeout.ms" = "6000"
[dead_letter.options]
"ssl.key.password" = "literal-key-p4ss"
[parking.options]
"sasl.password" = "${{KAFKA_PASSWORD}}"
"#
    );
    let s = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let paths: Vec<&str> = s.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "kafka.options.sasl.password",
            "dead_letter.options.ssl.key.password"
        ]
    );
    let shown = format!("{:?} {s:?}", s.warnings);
    assert!(
        !shown.contains("literal-") && !shown.contains("env-kafka"),
        "{shown}"
    );
}

fn hec_with(id: &str, extra: &str) -> String {
    format!(
        "[connectors.{id}]\nkind = \"splunk_hec\"\nendpoint = \"https://127.0.0.1:8088\"\ntoken = \"t\"\n{extra}\n"
    )
}

#[test]
fn tls_files_and_proxy_are_read_and_checked_at_load() {
    let pki = switchyard_testkit::tls::Pki::generate();
    let (ca, cert, key) = (
        pki.ca_file().display().to_string(),
        pki.client_cert_file().display().to_string(),
        pki.client_key_file().display().to_string(),
    );
    let good = format!(
        "{KAFKA}{}",
        hec_with(
            "hec",
            &format!(
                "proxy = \"http://user:proxy-p4ss@127.0.0.1:3128\"\n[connectors.hec.tls]\nca_file = \"{ca}\"\ntrust_system_roots = false\ncert_file = \"{cert}\"\nkey_file = \"{key}\""
            )
        )
    );
    let s = load(&good).unwrap_or_else(|e| panic!("{e}"));
    let client = format!("{:?}", s.connectors[0].client);
    assert!(
        client.contains("ca: true")
            && client.contains("system_roots: false")
            && client.contains("client_certificate: true")
            && client.contains("Url(http://127.0.0.1:3128)"),
        "{client}"
    );
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("PRIVATE KEY") && !debug.contains("proxy-p4ss"),
        "{debug}"
    );

    let tables = [
        hec_with(
            "missing",
            "[connectors.missing.tls]\nca_file = \"/nonexistent/ca.pem\"",
        ),
        hec_with(
            "unpaired",
            &format!("[connectors.unpaired.tls]\ncert_file = \"{cert}\""),
        ),
        hec_with(
            "mismatched",
            &format!("[connectors.mismatched.tls]\ncert_file = \"{ca}\"\nkey_file = \"{key}\""),
        ),
        hec_with(
            "not-a-ca",
            &format!("[connectors.not-a-ca.tls]\nca_file = \"{key}\""),
        ),
        hec_with(
            "no-roots",
            "[connectors.no-roots.tls]\ntrust_system_roots = false",
        ),
        hec_with("insecure", "[connectors.insecure.tls]\nverify = false"),
        hec_with("bad-proxy", "proxy = \"proxy:3128\""),
        format!(
            "[connectors.fh]\nkind = \"kinesis_firehose\"\ndelivery_stream = \"s\"\nproxy = \"none\"\n[connectors.fh.tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        ),
    ];
    let problems = load(&format!("{KAFKA}{}", tables.concat())).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "connectors.missing.tls.ca_file",
        "connectors.unpaired.tls.cert_file",
        "connectors.mismatched.tls",
        "connectors.not-a-ca.tls.ca_file",
        "connectors.no-roots.tls.trust_system_roots",
        "connectors.insecure.tls.verify",
        "connectors.bad-proxy.proxy",
        "connectors.fh.tls.cert_file",
    ] {
        assert!(paths.contains(&want), "{want} missing from {problems:?}");
    }
    assert_eq!(problems.len(), 8, "{problems:?}");
    let shown = format!("{problems:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    // A disabled connector may name files this environment does not mount.
    let disabled = format!(
        "{KAFKA}{}",
        hec_with(
            "off",
            "enabled = false\n[connectors.off.tls]\nca_file = \"/nonexistent/ca.pem\""
        )
    );
    let s = load(&disabled).unwrap_or_else(|e| panic!("{e}"));
    let err = s.connectors[0].runnable().unwrap_err().to_string();
    assert!(
        err.contains("connectors.off.tls.ca_file: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
}

/// `BASE` with an OTLP connector and a `[tenants]` directory at `dir`.
fn with_tenants(dir: &SecretDir, extra: &str) -> String {
    format!(
        "{BASE}index = \"main\"\n[connectors.otlp]\nkind = \"otlp_logs\"\nendpoint = \"https://otlp:4318/v1/logs\"\n[connectors.otlp.headers]\nx-api-key = \"${{DD_API_KEY}}\"\nx-team = \"${{DD_API_KEY}}\"\n[tenants]\ndirectory = \"{}\"\n{extra}",
        dir.0.display()
    )
}

#[test]
fn a_tenant_file_overrides_what_differs_for_its_customer() {
    let dir = SecretDir::new("tenants-ok");
    dir.file(
        "acme.toml",
        "[connectors.hec]\nendpoint = \"https://splunk.acme:8088\"\ntoken = \"${ACME_TOKEN}\"\n\
         [connectors.otlp]\nenabled = false\n[connectors.otlp.headers]\nx-api-key = \"${ACME_TOKEN}\"\n",
    );
    // Globex's token demands indexer acknowledgement: its instance turns it on.
    dir.file(
        "globex.toml",
        "[connectors.hec]\nindex = \"globex\"\nack = true\n",
    );
    // Not tenants: Kubernetes' own entries in a mounted ConfigMap, and other files.
    dir.file(".hidden.toml", "not toml at all");
    dir.file("README", "not a tenant");
    let lookup = |name: &str| match name {
        "ACME_TOKEN" => Some("acme-hec-token".to_string()),
        _ => lookup(name),
    };
    let s = Settings::from_toml(&with_tenants(&dir, ""), &lookup, false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.tenants.unknown, Unknown::Default);
    assert_eq!(
        s.tenants.by_customer.keys().collect::<Vec<_>>(),
        ["acme", "globex"]
    );
    let acme = &s.tenants.by_customer["acme"];
    let hec = acme.connectors[0].kind.downcast_ref::<HecConfig>().unwrap();
    assert_eq!(hec.endpoint, "https://splunk.acme:8088");
    assert_eq!(hec.token.as_ref().unwrap().expose(), "acme-hec-token");
    assert_eq!(
        hec.index.as_deref(),
        Some("main"),
        "what the file does not say is the connector's"
    );
    let otlp = &acme.connectors[1];
    assert!(!otlp.enabled);
    let headers = &otlp
        .kind
        .downcast_ref::<switchyard_otlp_logs::OtlpLogsConfig>()
        .unwrap()
        .headers;
    assert_eq!(headers["x-api-key"].expose(), "acme-hec-token");
    assert_eq!(
        headers["x-team"].expose(),
        "DD_API_KEY-value",
        "tables merge key by key"
    );
    let globex = &s.tenants.by_customer["globex"].connectors[0];
    let hec = globex.kind.downcast_ref::<HecConfig>().unwrap();
    assert_eq!(
        (hec.endpoint.as_str(), hec.index.as_deref()),
        ("https://hec:8088", Some("globex"))
    );
    assert!(hec.ack);
    // The default instances are untouched.
    let base = s.connectors[0].kind.downcast_ref::<HecConfig>().unwrap();
    assert_eq!(base.index.as_deref(), Some("main"));
    assert!(!base.ack);
    assert!(!format!("{:?}", s.tenants).contains("acme-hec-token"));
}

#[test]
fn a_bad_tenant_file_is_refused_naming_the_file_and_the_key() {
    let dir = SecretDir::new("tenants-bad");
    let acme = dir.file(
        "acme.toml",
        "[connectors.hec]\ntoken = \"literal-acme-token\"\nbatch = { max_events = 1 }\n\
         [connectors.nosuch]\nendpoint = \"https://x\"\n[rate]\nx = 1\n",
    );
    let unset = dir.file(
        "unset.toml",
        "[connectors.hec]\ntoken = \"${UNSET_TENANT_TOKEN}\"\n",
    );
    let bad_name = dir.file("a b.toml", "[connectors.hec]\nindex = \"x\"\n");
    let broken = dir.file("broken.toml", "[connectors.hec\n");
    let problems = load(&with_tenants(&dir, "unknown = \"reject\"\n"))
        .unwrap_err()
        .0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        format!("{acme}: connectors.hec.batch"),
        format!("{acme}: connectors.hec.token"),
        format!("{acme}: connectors.nosuch"),
        format!("{acme}: rate"),
        format!("{unset}: connectors.hec.token"),
        bad_name.clone(),
        broken.clone(),
    ] {
        assert!(
            paths.contains(&expected.as_str()),
            "{expected} not in {problems:#?}"
        );
    }
    let literal = problems
        .iter()
        .find(|p| p.path.ends_with("connectors.hec.token") && p.path.starts_with(&acme))
        .unwrap();
    assert!(literal.message.contains("tenant file"), "{literal}");
    assert!(!format!("{problems:?}").contains("literal-acme-token"));
}

#[test]
fn without_a_tenants_section_there_are_no_tenants_and_a_missing_directory_is_a_problem() {
    let s = load(BASE).unwrap();
    assert!(s.tenants.is_empty() && s.tenants.directory.is_none());
    let problems = load(&format!(
        "{BASE}[tenants]\ndirectory = \"/nonexistent/tenants\"\n"
    ))
    .unwrap_err()
    .0;
    assert_eq!(problems[0].path, "tenants.directory");
}

/// deploy/'s example tenant files fit the repo's connectors.toml: every problem they have
/// here is only that the Secret they name is not mounted on this machine.
#[test]
fn the_deploy_examples_tenant_files_fit_the_repo_config() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kustomize/components/tenants/tenants"
    );
    let text = format!(
        "{}\n[tenants]\ndirectory = \"{dir}\"\n",
        include_str!("../../../../connectors.toml")
    );
    let problems = load(&text).unwrap_err().0;
    assert!(!problems.is_empty());
    for p in &problems {
        assert!(
            p.message.contains("/etc/switchyard-tenant-secrets/")
                && p.message.contains("cannot be read"),
            "{p:?}"
        );
    }
    // And with the secrets there, they load (a secret file's content, stood in for).
    let mounted =
        std::env::temp_dir().join(format!("switchyard-deploy-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&mounted).unwrap();
    for name in [
        "486a1f-splunk-hec-token",
        "486a1f-datadog-api-key",
        "77be02-splunk-hec-token",
    ] {
        std::fs::write(mounted.join(name), "secret").unwrap();
    }
    let copied = mounted.join("tenants");
    std::fs::create_dir_all(&copied).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/etc/switchyard-tenant-secrets", mounted.to_str().unwrap());
        std::fs::write(copied.join(path.file_name().unwrap()), text).unwrap();
    }
    let text = format!(
        "{}\n[tenants]\ndirectory = \"{}\"\n",
        include_str!("../../../../connectors.toml"),
        copied.display()
    );
    let s = load(&text);
    let _ = std::fs::remove_dir_all(&mounted);
    let s = s.unwrap();
    assert_eq!(s.tenants.by_customer.len(), 2);
    let acme = &s.tenants.by_customer["486a1f"];
    assert!(
        acme.connectors
            .iter()
            .any(|c| c.id == "dz-connector-newrelic" && !c.enabled)
    );
}
