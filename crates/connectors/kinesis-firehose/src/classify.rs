//! What PutRecordBatch's answers mean (API reference; destinations.md §4.2, §4.3, §4.5).

use switchyard_core::{EventVerdict, Outcome, Verdict};

/// A PutRecordBatch answer, reduced to what classification needs.
#[derive(Debug, Clone)]
pub enum PutAnswer {
    /// HTTP 200: per record (in request order), its `ErrorCode` if it failed, and how many
    /// events it carried.
    Put {
        failures: Vec<Option<String>>,
        events_per_record: Vec<usize>,
    },
    /// The whole call failed with this error code and HTTP status.
    Failed {
        code: String,
        message: String,
        status: u16,
    },
}

/// Errors that mean "not now": capacity and throttling.
const RETRYABLE: [&str; 8] = [
    "ServiceUnavailableException",
    "InternalFailure",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
];

pub fn classify(answer: &PutAnswer, sent: usize) -> Verdict {
    match answer {
        PutAnswer::Put {
            failures,
            events_per_record,
        } => {
            if failures.iter().all(Option::is_none) {
                return Verdict::new(200, Outcome::Delivered);
            }
            let mut verdicts = Vec::with_capacity(sent);
            for (failure, n) in failures.iter().zip(events_per_record) {
                let v = match failure {
                    None => EventVerdict::Delivered,
                    // The documented per-record codes (ServiceUnavailableException,
                    // InternalFailure) are both retryable; so is anything new.
                    Some(_) => EventVerdict::Retry,
                };
                verdicts.extend(std::iter::repeat_n(v, *n));
            }
            Verdict::new(200, Outcome::Partial(verdicts))
        }
        PutAnswer::Failed {
            code,
            message,
            status,
        } => {
            let reason = format!("Firehose {status} {code}: {message}");
            let outcome = if RETRYABLE.contains(&code.as_str()) || *status >= 500 {
                Outcome::Retry { reason }
            } else {
                // ResourceNotFound, InvalidArgument, InvalidKMSResource, InvalidSource, and
                // authentication errors: fixing the config is the only cure.
                Outcome::Reject { reason }
            };
            Verdict::new(*status, outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: &str, status: u16) -> Outcome {
        classify(
            &PutAnswer::Failed {
                code: code.into(),
                message: "m".into(),
                status,
            },
            1,
        )
        .outcome
    }

    #[test]
    fn all_delivered() {
        let a = PutAnswer::Put {
            failures: vec![None, None],
            events_per_record: vec![1, 1],
        };
        assert_eq!(classify(&a, 2).outcome, Outcome::Delivered);
    }

    #[test]
    fn failed_records_retry_by_position_including_packed_events() {
        let a = PutAnswer::Put {
            failures: vec![
                None,
                Some("ServiceUnavailableException".into()),
                None,
                Some("InternalFailure".into()),
            ],
            events_per_record: vec![1, 2, 1, 1],
        };
        let Outcome::Partial(v) = classify(&a, 5).outcome else {
            panic!()
        };
        use EventVerdict::*;
        assert_eq!(v, [Delivered, Retry, Retry, Delivered, Retry]);
    }

    #[test]
    fn whole_call_errors() {
        for code in [
            "ServiceUnavailableException",
            "ThrottlingException",
            "LimitExceededException",
        ] {
            assert!(matches!(failed(code, 400), Outcome::Retry { .. }), "{code}");
        }
        assert!(matches!(
            failed("InternalError", 500),
            Outcome::Retry { .. }
        ));
        for code in [
            "ResourceNotFoundException",
            "InvalidArgumentException",
            "InvalidKMSResourceException",
            "InvalidSourceException",
            "UnrecognizedClientException",
        ] {
            assert!(
                matches!(failed(code, 400), Outcome::Reject { .. }),
                "{code}"
            );
        }
    }
}
