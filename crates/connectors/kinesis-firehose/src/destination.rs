//! How the binary knows Kinesis Data Firehose: its kind name, limits and credentials, and how
//! it is built.

use crate::config::{self, FirehoseConfig};
use crate::{BuildError, KinesisFirehose};
use switchyard_destination::{Descriptor, Destination, Framing, Wire, descriptor};
use switchyard_http::ClientOptions;

pub const DESCRIPTOR: Descriptor = descriptor::<FirehoseConfig>();

impl Destination for FirehoseConfig {
    const KIND: &'static str = "kinesis_firehose";
    const SECRET_KEYS: &'static [&'static str] = &["access_key_id", "secret_access_key"];
    const DEFAULT_LIMITS: switchyard_core::BatchLimits = config::DEFAULT_LIMITS;
    const HARD_LIMITS: switchyard_core::BatchLimits = config::HARD_LIMITS;
    /// Named `endpoint_url` before it was named like the other kinds' `endpoint`.
    const RENAMED_KEYS: &'static [(&'static str, &'static str)] = &[("endpoint_url", "endpoint")];
    /// The AWS SDK's HTTPS client cannot present one.
    const CLIENT_CERTIFICATES: bool = false;
    type Connector = KinesisFirehose;
    type Error = BuildError;

    fn problems(&self) -> Vec<(&'static str, String)> {
        FirehoseConfig::problems(self)
    }

    async fn connect(&self, client: &ClientOptions) -> Result<KinesisFirehose, BuildError> {
        KinesisFirehose::new(self, client).await
    }

    /// Static keys (the access key id is the credential the stand-in checks) rather than a
    /// role, which would need STS.
    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", url.into()),
            ("region", "us-east-1".into()),
            ("access_key_id", credential.into()),
            ("secret_access_key", "stand-in-secret-access-key".into()),
        ]
    }

    /// SigV4 names the access key id in `Authorization`; one answer per record.
    fn wire(&self) -> Wire {
        Wire {
            authorized: |header, credential| {
                header("authorization")
                    .is_some_and(|a| a.contains(&format!("Credential={credential}/")))
            },
            health_request: Some(("x-amz-target", "Firehose_20150804.DescribeDeliveryStream")),
            framing: Framing::FirehoseRecords,
            accepted: (200, |n| {
                let answers = vec![r#"{"RecordId":"r"}"#; n].join(",");
                format!(
                    r#"{{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[{answers}]}}"#
                )
            }),
            healthy: format!(
                r#"{{"DeliveryStreamDescription":{{"DeliveryStreamName":{:?},"DeliveryStreamARN":"arn:aws:firehose:us-east-1:123456789012:deliverystream/{}","DeliveryStreamStatus":"ACTIVE","DeliveryStreamType":"DirectPut","VersionId":"1","Destinations":[],"HasMoreDestinations":false}}}}"#,
                self.delivery_stream, self.delivery_stream
            ),
            content_type: "application/x-amz-json-1.1",
        }
    }

    #[cfg(feature = "stand-in")]
    async fn start_stand_in(
        &self,
        credential: &str,
    ) -> Result<switchyard_destination::StandIn, String> {
        let fake =
            switchyard_testkit::FakeFirehose::start(&self.delivery_stream, credential, false)
                .await
                .map_err(|e| e.to_string())?;
        Ok(switchyard_testkit::fake::stand_in_parts(fake).into())
    }
}
