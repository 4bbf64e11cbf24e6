//! What HEC's answers mean, after Splunk's "Possible error codes" table.

use serde::Deserialize;
use switchyard_core::{EventVerdict, Outcome, Verdict};
use switchyard_http::HttpResponse;

/// HEC's answer body: `{"text":…,"code":N}` plus `invalid-event-number` on per-event errors.
#[derive(Debug, Default, Deserialize)]
struct Reply {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event_number: Option<i64>,
}

pub fn classify(response: &HttpResponse, sent: usize) -> Verdict {
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
    let outcome = match status {
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
    };
    Verdict {
        retry_after: response.retry_after,
        ..Verdict::new(status, outcome)
    }
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
        classify(&answer(status, body), sent).outcome
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
        assert_eq!(classify(&a, 1).retry_after, Some(Duration::from_secs(3)));
    }
}
