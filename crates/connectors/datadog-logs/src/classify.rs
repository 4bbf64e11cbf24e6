//! What the logs intake's answers mean (Datadog API reference, "Send logs").

use serde_json::Value;
use switchyard_core::{Outcome, Verdict};
use switchyard_http::HttpResponse;

pub fn classify(response: &HttpResponse) -> Verdict {
    let status = response.status;
    let why = || {
        // Error bodies are JSON:API style: {"errors":[{"status","title","detail"}]}.
        let detail = serde_json::from_slice::<Value>(&response.body)
            .ok()
            .and_then(|v| v["errors"].get(0).cloned())
            .map(|e| match &e {
                Value::String(s) => s.clone(),
                _ => e["detail"]
                    .as_str()
                    .or(e["title"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            })
            .unwrap_or_default();
        format!("Datadog {status}: {detail}")
    };
    let outcome = match status {
        200..=299 => Outcome::Delivered,
        // Over 5 MB uncompressed: smaller requests will go through.
        413 => Outcome::Split,
        // Timeout, rate limit, server trouble: Datadog documents these as retryable.
        408 | 429 | 500..=599 => Outcome::Retry { reason: why() },
        // 400 (payload), 401 (no key), 403 (bad key) and the rest need a fix, not a resend.
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

    fn outcome(status: u16, body: &str) -> Outcome {
        classify(&HttpResponse {
            status,
            retry_after: None,
            body: body.to_owned().into(),
        })
        .outcome
    }

    #[test]
    fn documented_codes() {
        assert_eq!(outcome(202, "{}"), Outcome::Delivered);
        assert_eq!(outcome(413, ""), Outcome::Split);
        for s in [408, 429, 500, 503] {
            assert!(matches!(outcome(s, ""), Outcome::Retry { .. }), "{s}");
        }
        for s in [400, 401, 403] {
            assert!(matches!(outcome(s, ""), Outcome::Reject { .. }), "{s}");
        }
        let Outcome::Reject { reason } = outcome(
            403,
            r#"{"errors":[{"status":"403","title":"Forbidden","detail":"bad key"}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(reason, "Datadog 403: bad key");
    }
}
