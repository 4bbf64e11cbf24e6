//! What an OTLP/HTTP receiver's answers mean (OTLP specification, "OTLP/HTTP Response").
//!
//! - 200 with an `ExportLogsServiceResponse`: delivered. A populated `partial_success` with
//!   `rejected_log_records > 0` means that many records were dropped; the client MUST NOT
//!   retry, so the request counts as delivered and the drop is reported as a count (the
//!   receiver does not say which records).
//! - 429, 502, 503, 504: retryable, honouring `Retry-After` when present. Every other 4xx or
//!   5xx MUST NOT be retried. Failure bodies are a protobuf `google.rpc.Status`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use switchyard_core::{Outcome, Verdict};
use switchyard_http::HttpResponse;

/// Longest error text kept from a body that is not a `Status` (an HTML error page of a
/// proxy, say): enough to recognise it in a log line.
const CLIP: usize = 200;

pub fn classify(response: &HttpResponse) -> Verdict {
    let status = response.status;
    let outcome = match status {
        // The spec answers success with 200; other 2xx (some vendor gateways send 202) accept
        // the request just the same.
        200..=299 => return delivered(response),
        // A receiver whose body limit (the Collector's `max_request_body_size`) is below ours.
        // Not a retry of the same request, which the spec forbids for 4xx: the same events in
        // smaller requests fit. The engine rejects a single event that still gets 413.
        413 => Outcome::Split,
        429 | 502 | 503 | 504 => Outcome::Retry {
            reason: reason(response),
        },
        // 400 (bad data), 401/403 (credentials), 404 (wrong path: the endpoint is used as
        // it is), 415, 500 and the rest: resending cannot help, and the spec forbids it.
        _ => Outcome::Reject {
            reason: reason(response),
        },
    };
    Verdict {
        retry_after: response.retry_after,
        ..Verdict::new(status, outcome)
    }
}

fn delivered(response: &HttpResponse) -> Verdict {
    let verdict = Verdict::new(response.status, Outcome::Delivered);
    // An empty body decodes as a response without partial_success. A body that does not
    // decode at all still came with a success status: the records were accepted.
    let Ok(answer) = ExportLogsServiceResponse::decode(response.body.as_ref()) else {
        return verdict;
    };
    match answer.partial_success {
        Some(p) if p.rejected_log_records > 0 => {
            let reason = if p.error_message.is_empty() {
                "OTLP partial success without a message".to_string()
            } else {
                p.error_message
            };
            verdict.with_dropped(p.rejected_log_records as u64, reason)
        }
        // rejected = 0 with a message is a warning on a full success.
        _ => verdict,
    }
}

/// `OTLP <status>: <Status.message>`, or the clipped body when it is not a `Status`.
fn reason(response: &HttpResponse) -> String {
    let status = response.status;
    let message = match tonic_types::pb::Status::decode(response.body.as_ref()) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => clipped(&response.body),
    };
    if message.is_empty() {
        format!("OTLP {status}")
    } else {
        format!("OTLP {status}: {message}")
    }
}

fn clipped(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(CLIP)]);
    let text = text.trim();
    if body.len() > CLIP {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;
    use std::time::Duration;
    use switchyard_core::Dropped;

    fn answer(status: u16, body: Vec<u8>) -> Verdict {
        classify(&HttpResponse {
            status,
            retry_after: None,
            body: body.into(),
        })
    }

    fn partial(rejected: i64, message: &str) -> Vec<u8> {
        ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message.into(),
            }),
        }
        .encode_to_vec()
    }

    fn status(message: &str) -> Vec<u8> {
        tonic_types::pb::Status {
            code: 3,
            message: message.into(),
            details: vec![],
        }
        .encode_to_vec()
    }

    #[test]
    fn success_with_or_without_an_empty_partial_success_is_delivered() {
        let full = answer(200, ExportLogsServiceResponse::default().encode_to_vec());
        assert_eq!(full, Verdict::new(200, Outcome::Delivered));
        assert_eq!(answer(200, vec![]), Verdict::new(200, Outcome::Delivered));
        assert_eq!(
            answer(200, partial(0, "")),
            Verdict::new(200, Outcome::Delivered)
        );
        // A warning on a full success.
        assert_eq!(answer(200, partial(0, "attribute too long")).dropped, None);
        assert_eq!(
            answer(200, b"\xff\xff".to_vec()).outcome,
            Outcome::Delivered
        );
    }

    #[test]
    fn partial_success_is_delivered_with_a_drop_count_and_no_retry() {
        let v = answer(200, partial(3, "3 records too old"));
        assert_eq!(v.outcome, Outcome::Delivered);
        assert_eq!(
            v.dropped,
            Some(Dropped {
                count: 3,
                reason: "3 records too old".into()
            })
        );
        let v = answer(200, partial(1, ""));
        assert_eq!(v.dropped.unwrap().count, 1);
    }

    #[test]
    fn the_specs_retryable_codes_retry_with_retry_after() {
        for code in [429, 502, 503, 504] {
            let v = classify(&HttpResponse {
                status: code,
                retry_after: Some(Duration::from_secs(7)),
                body: status("overloaded").into(),
            });
            assert_eq!(
                v.outcome,
                Outcome::Retry {
                    reason: format!("OTLP {code}: overloaded")
                }
            );
            assert_eq!(v.retry_after, Some(Duration::from_secs(7)));
        }
    }

    #[test]
    fn other_failures_are_rejected_with_the_status_message() {
        for code in [400, 401, 403, 404, 405, 415, 500, 501] {
            let Outcome::Reject { reason } = answer(code, status("no")).outcome else {
                panic!("{code} should be rejected");
            };
            assert_eq!(reason, format!("OTLP {code}: no"));
        }
        let Outcome::Reject { reason } = answer(401, b"<html>Unauthorized</html>".to_vec()).outcome
        else {
            panic!()
        };
        assert_eq!(reason, "OTLP 401: <html>Unauthorized</html>");
        let Outcome::Reject { reason } = answer(400, vec![b'x'; 1000]).outcome else {
            panic!()
        };
        assert!(
            reason.chars().count() < 220 && reason.ends_with('…'),
            "{reason}"
        );
        assert_eq!(
            answer(403, vec![]).outcome,
            Outcome::Reject {
                reason: "OTLP 403".into()
            }
        );
    }

    #[test]
    fn too_large_is_split() {
        assert_eq!(
            answer(413, status("body too large")).outcome,
            Outcome::Split
        );
    }
}
