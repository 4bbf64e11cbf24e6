//! Records holding a JSON array of events (the vendor's connector payload), end to end: each
//! member is routed by its own `connector_list`, a malformed member is dead-lettered alone,
//! and the record's offset is committed only once every member is finished everywhere.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use switchyard::Pipeline;
use switchyard_core::MalformedReason;
use switchyard_testkit::{FakeDatadog, datadog};
use switchyard_tests::*;

const DLQ: &str = "qoe-dlq";

/// One generated event for each list, in order: (id, bytes).
fn members(run: &str, lists: &[&str]) -> Vec<(String, Vec<u8>)> {
    lists
        .iter()
        .enumerate()
        .map(|(i, list)| events_to(&format!("{run}{i}"), 1, &[list]).remove(0))
        .collect()
}

/// An array record of `members`' bytes (and raw JSON `extra` members), keyed by `name`.
fn array(name: &str, members: &[(String, Vec<u8>)], extra: &[&str]) -> (String, Vec<u8>) {
    let mut parts: Vec<String> = members
        .iter()
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    parts.extend(extra.iter().map(|s| s.to_string()));
    (
        name.to_string(),
        format!("[{}]", parts.join(",\n")).into_bytes(),
    )
}

fn ids_of(items: &[Value], at: impl Fn(&Value) -> &Value) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for v in items {
        if let Some(id) = at(v)["event_id"].as_str() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
}

fn once(ids: &[&(String, Vec<u8>)]) -> HashMap<String, usize> {
    ids.iter().map(|(id, _)| (id.clone(), 1)).collect()
}

fn committed_to(pipeline: &Pipeline, end: i64) -> bool {
    tokio::task::block_in_place(|| {
        pipeline.wait_for_source(PATIENCE, |s| {
            s.committed.get(&(TOPIC.to_string(), 0)) == Some(&end)
        })
    })
}

const BOTH: &str = "dz-connector-splunk,dz-connector-datadog";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_of_an_array_goes_where_its_own_list_says_and_bad_members_alone_to_the_dlq() {
    let h = Harness::new(1).await;
    h.broker.create_topic(DLQ, 1).unwrap();
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    let single = events_to("single", 2, &[SPLUNK]);
    let mixed = members("mixed", &[SPLUNK, DD, BOTH]);
    let with_bad = members("bad", &[SPLUNK, DD]);
    let nested = format!("[{}]", String::from_utf8(single[0].1.clone()).unwrap());
    let no_timestamp =
        r#"{"event_id":"no-ts","connector_list":"dz-connector-splunk","event":{"type":"x"}}"#;
    let records = vec![
        single[0].clone(),
        array("mixed", &mixed, &[]),
        ("empty".into(), b" [ ] ".to_vec()),
        // Members 1 and 2 are malformed; 0 and 3 are good.
        {
            let good = |i: usize| String::from_utf8(with_bad[i].1.clone()).unwrap();
            let body = format!("[{}, {nested}, {no_timestamp}, {}]", good(0), good(1));
            ("with-bad".to_string(), body.into_bytes())
        },
        ("broken".into(), b"[{\"event\":{\"timestamp\":1}},".to_vec()),
        single[1].clone(),
    ];
    h.produce(records);
    let settings = h.settings(
        "g-arrays",
        "",
        &format!(
            "{}\n[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20\n[dead_letter]\ntopic = \"{DLQ}\"",
            datadog_table(&dd.url(), "[connectors.dz-connector-datadog.batch]\nmax_linger_ms = 20")
        ),
    );
    let pipeline = Pipeline::start(&settings).await.unwrap();
    assert!(h.hec.wait_for_received(5, PATIENCE).await);
    assert!(dd.wait_for_received(3, PATIENCE).await);
    assert!(
        committed_to(&pipeline, 6),
        "every record finishes, the array with bad members once its letters are written: {:?}",
        pipeline.source_status()
    );
    let source = pipeline.source_stats().clone();
    assert!(pipeline.shutdown().await);

    assert_eq!(
        h.indexed_ids(),
        once(&[&single[0], &mixed[0], &mixed[2], &with_bad[0], &single[1]]),
        "HEC gets exactly the members naming it, once each"
    );
    assert_eq!(
        ids_of(&dd.received(), |v| v),
        once(&[&mixed[1], &mixed[2], &with_bad[1]]),
        "Datadog likewise"
    );
    assert!(dd.violations().is_empty(), "{:?}", dd.violations());
    assert_eq!(
        source.array_records.load(Relaxed),
        3,
        "mixed, empty, with-bad"
    );
    assert_eq!(source.array_members.load(Relaxed), 7);
    assert_eq!(
        source.malformed(MalformedReason::NotObject),
        1,
        "the nested array"
    );
    assert_eq!(source.malformed(MalformedReason::MissingTimestamp), 1);
    assert_eq!(
        source.malformed(MalformedReason::NotJson),
        1,
        "the broken array, whole"
    );
    assert_eq!(source.malformed_dead_lettered.load(Relaxed), 3);

    let letters = read_letters(h.broker.bootstrap_servers(), DLQ, 1, 3);
    assert_eq!(letters.len(), 3);
    let member = |m: &str| {
        letters
            .iter()
            .find(|l| {
                l.headers
                    .get("switchyard.source_member")
                    .map(String::as_str)
                    == Some(m)
            })
            .unwrap_or_else(|| panic!("no letter of member {m}"))
    };
    let (nested_letter, no_ts_letter) = (member("1"), member("2"));
    assert_eq!(nested_letter.payload, nested.as_bytes(), "the member alone");
    assert!(
        nested_letter.headers["switchyard.reason"]
            .starts_with("malformed: not_object: array member 1 is a JSON array"),
        "{:?}",
        nested_letter.headers
    );
    assert_eq!(nested_letter.headers["switchyard.source_offset"], "3");
    assert_eq!(no_ts_letter.payload, no_timestamp.as_bytes());
    let whole = letters
        .iter()
        .find(|l| !l.headers.contains_key("switchyard.source_member"))
        .expect("the broken array's letter");
    assert_eq!(whole.headers["switchyard.source_offset"], "4");
    assert!(whole.headers["switchyard.reason"].starts_with("malformed: not_json"));
}

/// The first pipeline delivers every Splunk member of three array records while Datadog
/// answers 503 to all, then crashes: only the first record, whose members went to Splunk
/// alone, may be committed. The second delivers the rest, and the members of the second and
/// third records reach Splunk again: proof that neither offset was committed while a member
/// was still owed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_an_array_record_redelivers_it_whole() {
    let h = Harness::new(1).await;
    let dd = FakeDatadog::start(DD_KEY).await.unwrap();
    dd.script(vec![datadog::reply(503, "Service Unavailable"); 100_000]);
    let first_record = members("r0-", &[SPLUNK, SPLUNK]);
    let owing = members("r1-", &[SPLUNK, DD, SPLUNK]);
    let behind = members("r2-", &[SPLUNK, SPLUNK]);
    h.produce(vec![
        array("r0", &first_record, &[]),
        array("r1", &owing, &[]),
        array("r2", &behind, &[]),
    ]);
    let settings = h.settings(
        "g-array-crash",
        "",
        &format!(
            "{}\n[connectors.dz-connector-splunk.batch]\nmax_linger_ms = 20",
            datadog_table(
                &dd.url(),
                "[connectors.dz-connector-datadog.batch]\nmax_linger_ms = 20"
            )
        ),
    );
    let first = Pipeline::start(&settings).await.unwrap();
    assert!(
        h.hec.wait_for_received(6, PATIENCE).await,
        "every Splunk member"
    );
    assert!(
        committed_to(&first, 1),
        "the first record, finished: {:?}",
        first.source_status()
    );
    first.crash().await;
    dd.clear_script();

    let second = Pipeline::start(&settings).await.unwrap();
    assert!(dd.wait_for_received(1, PATIENCE).await);
    assert!(committed_to(&second, 3), "{:?}", second.source_status());
    assert!(second.shutdown().await);

    let hec = h.indexed_ids();
    let splunk_members = [
        (&first_record[0], 1),
        (&first_record[1], 1),
        (&owing[0], 2),
        (&owing[2], 2),
        (&behind[0], 2),
        (&behind[1], 2),
    ];
    for ((id, _), times) in splunk_members {
        assert_eq!(hec.get(id), Some(&times), "{id}: {hec:?}");
    }
    assert_eq!(ids_of(&dd.received(), |v| v), once(&[&owing[1]]));
}
