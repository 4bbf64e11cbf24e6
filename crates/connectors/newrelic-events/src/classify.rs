//! What the Event API's answers mean. A 200 says only that the request passed the
//! synchronous checks; per-event validity is enforced before sending (see `flatten`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchyard_core::{Outcome, Verdict};
use switchyard_http::HttpResponse;

pub fn classify(response: &HttpResponse) -> Verdict {
    let status = response.status;
    let why = || {
        let body = String::from_utf8_lossy(&response.body);
        format!(
            "New Relic {status}: {}",
            body.chars().take(200).collect::<String>()
        )
    };
    let outcome = match status {
        200..=299 => Outcome::Delivered,
        413 => Outcome::Split,
        408 | 429 | 500..=599 => Outcome::Retry { reason: why() },
        // 400 (bad length/empty), 403 (key), 415 (content type): resending cannot help.
        _ => Outcome::Reject { reason: why() },
    };
    // Over the rate limit New Relic refuses the rest of the minute and sends no Retry-After:
    // wait for the next minute window rather than hammering it.
    let retry_after = match (status, response.retry_after) {
        (429, None) => Some(until_next_minute()),
        (_, given) => given,
    };
    Verdict {
        retry_after,
        ..Verdict::new(status, outcome)
    }
}

fn until_next_minute() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_millis(60_000 - (now.as_millis() % 60_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: u16) -> Verdict {
        classify(&HttpResponse {
            status,
            retry_after: None,
            body: r#"{"success":false}"#.into(),
        })
    }

    #[test]
    fn documented_codes() {
        assert_eq!(verdict(200).outcome, Outcome::Delivered);
        assert_eq!(verdict(413).outcome, Outcome::Split);
        for s in [408, 429, 500, 503] {
            assert!(matches!(verdict(s).outcome, Outcome::Retry { .. }), "{s}");
        }
        for s in [400, 403, 415] {
            assert!(matches!(verdict(s).outcome, Outcome::Reject { .. }), "{s}");
        }
    }

    #[test]
    fn rate_limit_waits_for_the_next_minute() {
        let wait = verdict(429).retry_after.unwrap();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert_eq!(verdict(503).retry_after, None);
    }
}
