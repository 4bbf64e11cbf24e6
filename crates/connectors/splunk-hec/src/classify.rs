//! What HEC's answers mean, after Splunk's "Possible error codes" table.

use serde::Deserialize;
use std::collections::HashMap;
use switchyard_core::{ConfirmError, EventVerdict, Outcome, Receipt, Verdict};
use switchyard_http::HttpResponse;

/// HEC's answer body: `{"text":…,"code":N}` plus `invalid-event-number` on per-event errors
/// and `ackId` on success when the token has indexer acknowledgement on.
#[derive(Debug, Default, Deserialize)]
struct Reply {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event_number: Option<i64>,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
}

/// Indexer acknowledgement, as the answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `ack = false`: a 200 is delivery.
    Off,
    /// `ack = true`, on the channel of this generation (see [`crate::ack`]).
    On { generation: u32 },
}

/// Data channel is missing: the token has indexer acknowledgement on.
pub const CHANNEL_MISSING: i64 = 10;
/// Invalid data channel: Splunk does not know the channel (restarted, or the channel idled out).
pub const CHANNEL_INVALID: i64 = 11;
/// ACK is disabled: the token has indexer acknowledgement off.
pub const ACK_DISABLED: i64 = 14;

/// HEC's `code` in `body`, if it has one.
pub fn code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Reply>(body).ok()?.code
}

pub fn classify(response: &HttpResponse, sent: usize, ack: Ack) -> Verdict {
    let status = response.status;
    let reply: Reply = serde_json::from_slice(&response.body).unwrap_or_default();
    let why = || match reply.code {
        Some(code) => format!("HEC {status} code {code}: {}", reply.text),
        None => format!(
            "HEC {status}: {}",
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect::<String>()
        ),
    };
    let outcome = match (status, reply.code, ack) {
        // With ack on, a 200 is only a receipt: the events count once the id is acknowledged.
        // A 200 without an id means the token has ack off; Splunk ignores the channel, and
        // there is nothing to wait for.
        (200..=299, _, Ack::On { generation }) => match reply.ack_id {
            Some(id) => Outcome::Accepted(crate::ack::receipt(generation, id)),
            None => Outcome::Delivered,
        },
        (400, Some(CHANNEL_MISSING), Ack::Off) => Outcome::Reject {
            reason: format!(
                "{}: the token has indexer acknowledgement on: set ack = true on the connector",
                why()
            ),
        },
        // Splunk forgot the channel: the connector opens a new one and the events go again.
        (400, Some(CHANNEL_INVALID), Ack::On { .. }) => Outcome::Retry {
            reason: format!("{}: a new channel is opened", why()),
        },
        (400, Some(ACK_DISABLED), Ack::On { .. }) => Outcome::Reject {
            reason: format!("{}: {ACK_DISABLED_HINT}", why()),
        },
        _ => classify_final(status, &reply, sent, why),
    };
    Verdict {
        retry_after: response.retry_after,
        ..Verdict::new(status, outcome)
    }
}

const ACK_DISABLED_HINT: &str = "the token has indexer acknowledgement off: set ack = false on the connector or turn it on for the token";

/// What an answer means whether or not ack is on.
fn classify_final(status: u16, reply: &Reply, sent: usize, why: impl Fn() -> String) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        // Body over max_content_length: smaller requests will go through.
        413 => Outcome::Split,
        // Busy (9), internal error (8), shutting down (23), queue or ack channel full (26/27),
        // gateway errors: nothing of the body was taken, so all of it is resent. 501 means
        // the method is not implemented, which no retry changes.
        408 | 429 | 500 | 502..=599 => Outcome::Retry { reason: why() },
        // Codes 6, 7, 12, 13, 15: Splunk indexed the events before the bad one and none
        // after it. Resending the prefix would duplicate it.
        400 => match reply.invalid_event_number {
            Some(bad) if (0..sent as i64).contains(&bad) => Outcome::Partial(
                (0..sent as i64)
                    .map(|i| match i.cmp(&bad) {
                        std::cmp::Ordering::Less => EventVerdict::Delivered,
                        std::cmp::Ordering::Equal => EventVerdict::Reject { reason: why() },
                        std::cmp::Ordering::Greater => EventVerdict::Retry,
                    })
                    .collect(),
            ),
            _ => Outcome::Reject { reason: why() },
        },
        // 401/403 (token codes 1–4), 404/405 (wrong URL), 415 and the rest: configuration or
        // payload problems that resending cannot fix.
        _ => Outcome::Reject { reason: why() },
    }
}

/// `/services/collector/ack`'s answer: `{"acks":{"<id>":true|false,…}}`.
#[derive(Debug, Deserialize)]
struct AckReply {
    acks: HashMap<String, bool>,
}

/// The ack ids `response` (to a poll of the channel) says are indexed, or why it says
/// nothing. An id Splunk does not mention is not acknowledged yet.
pub fn acknowledged(response: &HttpResponse) -> Result<Vec<u64>, ConfirmError> {
    let refused = |hint: &str| {
        let body = String::from_utf8_lossy(&response.body);
        let quoted: String = body.chars().take(200).collect();
        ConfirmError::Refused(format!("HEC ack {}: {quoted}{hint}", response.status))
    };
    if response.status != 200 {
        let hint = match code(&response.body) {
            Some(ACK_DISABLED) => format!(": {ACK_DISABLED_HINT}"),
            Some(CHANNEL_INVALID) => ": a new channel is opened".into(),
            _ => String::new(),
        };
        return Err(refused(&hint));
    }
    let reply: AckReply = serde_json::from_slice(&response.body).map_err(|_| refused(""))?;
    let mut ids: Vec<u64> = reply
        .acks
        .into_iter()
        .filter(|(_, indexed)| *indexed)
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Of `asked`, the receipts whose ids of channel `generation` are in `ids`.
pub fn confirmed(asked: &[Receipt], generation: u32, ids: &[u64]) -> Vec<Receipt> {
    asked
        .iter()
        .copied()
        .filter(|r| {
            let (g, id) = crate::ack::parts(*r);
            g == generation && ids.binary_search(&id).is_ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            retry_after: None,
            body: body.to_owned().into(),
        }
    }

    fn outcome(status: u16, body: &str, sent: usize) -> Outcome {
        classify(&answer(status, body), sent, Ack::Off).outcome
    }

    const ON: Ack = Ack::On { generation: 2 };

    fn with_ack(status: u16, body: &str) -> Outcome {
        classify(&answer(status, body), 1, ON).outcome
    }

    #[test]
    fn success() {
        assert_eq!(
            outcome(200, r#"{"text":"Success","code":0}"#, 3),
            Outcome::Delivered
        );
    }

    #[test]
    fn retryable_codes() {
        for (status, code) in [(503, 9), (500, 8), (503, 23), (429, 26), (429, 27)] {
            let body = format!(r#"{{"text":"x","code":{code}}}"#);
            assert!(
                matches!(outcome(status, &body, 1), Outcome::Retry { .. }),
                "{status}/{code}"
            );
        }
        assert!(matches!(
            outcome(502, "<html>bad gateway</html>", 1),
            Outcome::Retry { .. }
        ));
        assert!(matches!(outcome(501, "", 1), Outcome::Reject { .. }));
    }

    #[test]
    fn token_and_config_errors_reject() {
        for (status, code) in [
            (401, 2),
            (401, 3),
            (403, 4),
            (403, 1),
            (400, 5),
            (400, 10),
            (400, 14),
            (404, 404),
        ] {
            let body = format!(r#"{{"text":"nope","code":{code}}}"#);
            let Outcome::Reject { reason } = outcome(status, &body, 2) else {
                panic!("{status}/{code} should reject")
            };
            assert!(reason.contains(&format!("code {code}")), "{reason}");
        }
    }

    #[test]
    fn invalid_event_number_splits_prefix_bad_suffix() {
        let o = outcome(
            400,
            r#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#,
            4,
        );
        let Outcome::Partial(v) = o else {
            panic!("expected partial")
        };
        assert_eq!(v[0], EventVerdict::Delivered);
        assert!(matches!(&v[1], EventVerdict::Reject { reason } if reason.contains("code 6")));
        assert_eq!(&v[2..], [EventVerdict::Retry, EventVerdict::Retry]);
    }

    #[test]
    fn out_of_range_event_number_rejects_the_request() {
        let o = outcome(400, r#"{"text":"x","code":7,"invalid-event-number":9}"#, 2);
        assert!(matches!(o, Outcome::Reject { .. }));
    }

    #[test]
    fn too_large_splits_and_retry_after_is_kept() {
        assert_eq!(outcome(413, "", 10), Outcome::Split);
        let mut a = answer(429, r#"{"text":"full","code":26}"#);
        a.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            classify(&a, 1, Ack::Off).retry_after,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn without_ack_an_ack_id_is_ignored_and_a_200_is_delivery() {
        assert_eq!(
            outcome(200, r#"{"text":"Success","code":0,"ackId":4}"#, 1),
            Outcome::Delivered
        );
    }

    #[test]
    fn with_ack_a_200_is_a_receipt_for_its_ack_id_on_this_channel() {
        assert_eq!(
            with_ack(200, r#"{"text":"Success","code":0,"ackId":4}"#),
            Outcome::Accepted(crate::ack::receipt(2, 4))
        );
        assert_eq!(
            with_ack(200, r#"{"text":"Success","code":0}"#),
            Outcome::Delivered,
            "a token with ack off answers no id: nothing to wait for"
        );
    }

    #[test]
    fn channel_missing_without_ack_says_to_turn_ack_on() {
        let Outcome::Reject { reason } =
            outcome(400, r#"{"text":"Data channel is missing","code":10}"#, 2)
        else {
            panic!("code 10 should reject")
        };
        assert!(reason.contains("code 10"), "{reason}");
        assert!(reason.contains("set ack = true"), "{reason}");
    }

    #[test]
    fn invalid_channel_with_ack_retries_on_a_new_channel_and_rejects_without() {
        let body = r#"{"text":"Invalid data channel","code":11}"#;
        assert!(matches!(
            with_ack(400, body),
            Outcome::Retry { reason } if reason.contains("new channel")
        ));
        assert!(matches!(outcome(400, body, 1), Outcome::Reject { .. }));
    }

    #[test]
    fn ack_disabled_with_ack_on_names_the_key() {
        let Outcome::Reject { reason } = with_ack(400, r#"{"text":"ACK is disabled","code":14}"#)
        else {
            panic!("code 14 should reject")
        };
        assert!(
            reason.contains("code 14") && reason.contains("ack = false"),
            "{reason}"
        );
    }

    #[test]
    fn the_same_failures_mean_the_same_with_ack_on() {
        assert!(matches!(
            with_ack(503, r#"{"code":9}"#),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            with_ack(403, r#"{"code":4}"#),
            Outcome::Reject { .. }
        ));
        assert_eq!(with_ack(413, ""), Outcome::Split);
    }

    #[test]
    fn an_ack_poll_answer_lists_the_indexed_ids() {
        let a = answer(200, r#"{"acks":{"0":true,"1":false,"7":true}}"#);
        assert_eq!(acknowledged(&a).unwrap(), [0, 7]);
        let asked = [
            crate::ack::receipt(2, 0),
            crate::ack::receipt(2, 1),
            crate::ack::receipt(1, 7),
        ];
        assert_eq!(
            confirmed(&asked, 2, &[0, 7]),
            [crate::ack::receipt(2, 0)],
            "an id of an older channel is not this channel's"
        );
    }

    #[test]
    fn an_ack_poll_refused_says_why() {
        let e = acknowledged(&answer(400, r#"{"text":"ACK is disabled","code":14}"#)).unwrap_err();
        assert!(e.to_string().contains("ack = false"), "{e}");
        let e =
            acknowledged(&answer(400, r#"{"text":"Invalid data channel","code":11}"#)).unwrap_err();
        assert!(e.to_string().contains("new channel"), "{e}");
        assert!(acknowledged(&answer(200, "not json")).is_err());
    }
}
