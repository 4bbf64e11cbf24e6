//! Amazon Kinesis Data Firehose destination, through `aws-sdk-firehose` (PutRecordBatch).
//!
//! What is particular to Firehose lives here: settings and credentials ([`config`]), events as
//! delimited records with optional packing ([`encode`]), and the meaning of its answers
//! ([`classify`]), notably partial failures inside a 200: only the failed records are resent.

pub mod classify;
pub mod config;
mod destination;
pub mod encode;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_firehose::config::SharedHttpClient;
use aws_sdk_firehose::config::http::HttpResponse;
use aws_sdk_firehose::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use aws_sdk_firehose::{Client, config::Credentials, config::Region};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use classify::PutAnswer;
use switchyard_core::{
    BatchLimits, Connector, EncodeError, Encoded, Event, SendError, Shipment, Verdict,
};
use switchyard_http::{ClientOptions, Proxy};

pub use config::FirehoseConfig;
pub use destination::DESCRIPTOR;

pub struct KinesisFirehose {
    client: Client,
    stream: String,
    delimiter: Vec<u8>,
    packing: bool,
}

impl std::fmt::Debug for KinesisFirehose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KinesisFirehose")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Client options the AWS SDK's client cannot follow.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tls: a client certificate is not supported for kinesis_firehose")]
    ClientCertificate,
    #[error("tls: {0}")]
    Tls(String),
    #[error("proxy: {0}")]
    Proxy(String),
}

/// A PutRecordBatch request, ready to send again on retry.
#[derive(Debug, Clone)]
pub struct PutRequest {
    records: Vec<Record>,
    events_per_record: Vec<usize>,
    bytes: usize,
}

impl KinesisFirehose {
    /// Resolves region and credentials (the standard AWS chain unless static keys are set,
    /// then `role_arn` on top). `client`'s CA and proxy apply to Firehose's calls.
    pub async fn new(cfg: &FirehoseConfig, client: &ClientOptions) -> Result<Self, BuildError> {
        let http = http_client(client)?;
        // The engine owns retries: its backoff, Retry-After, per-record resends and the
        // collector_observability timings all count attempts. An SDK retry inside one engine
        // attempt would multiply attempts (3 × 10) and hide them, so the SDK makes one.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1));
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(url) = &cfg.endpoint {
            loader = loader.endpoint_url(url);
        }
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                None,
                None,
                "switchyard-config",
            ));
        }
        let base = loader.load().await;
        let mut conf = aws_sdk_firehose::config::Builder::from(&base);
        if let Some(arn) = &cfg.role_arn {
            let role = AssumeRoleProvider::builder(arn)
                .session_name("switchyard")
                .configure(&base)
                .build()
                .await;
            conf = conf.credentials_provider(role);
        }
        // Only Firehose's own calls: credential providers keep the SDK's client, since
        // instance metadata (169.254.169.254) is never reached through a proxy.
        conf = conf.http_client(http);
        Ok(KinesisFirehose {
            client: Client::from_conf(conf.build()),
            stream: cfg.delivery_stream.clone(),
            delimiter: cfg.record_delimiter.as_bytes().to_vec(),
            packing: cfg.record_packing,
        })
    }

    /// `DescribeDeliveryStream`: whether the stream exists and these credentials reach it.
    pub async fn check(&self) -> Result<(), String> {
        self.client
            .describe_delivery_stream()
            .delivery_stream_name(&self.stream)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("DescribeDeliveryStream: {}", describe(&e)))
    }
}

/// The SDK's HTTPS client (rustls, as its default one) with the connector's trusted CAs and
/// proxy. As for the HTTP connectors, no `proxy` means the standard variables apply.
fn http_client(options: &ClientOptions) -> Result<SharedHttpClient, BuildError> {
    if options.tls.has_identity() {
        return Err(BuildError::ClientCertificate);
    }
    let mut trust = TrustStore::default().with_native_roots(options.tls.trusts_system_roots());
    if let Some(ca) = options.tls.ca_pem() {
        trust = trust.with_pem_certificate(ca);
    }
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| BuildError::Tls(e.to_string()))?;
    let proxy = match &options.proxy {
        Proxy::FromEnvironment => ProxyConfig::from_env(),
        Proxy::Direct => ProxyConfig::disabled(),
        Proxy::Url(url) => {
            ProxyConfig::all(url.as_str()).map_err(|e| BuildError::Proxy(e.to_string()))?
        }
    };
    let provider = tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc);
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut b = aws_smithy_http_client::Connector::builder();
                b.set_connector_settings(settings.cloned());
                // The sleep drives the connect and read timeouts of `settings`.
                if let Some(components) = components {
                    b.set_sleep_impl(components.sleep_impl());
                }
                b.proxy_config(proxy.clone())
                    .tls_provider(provider.clone())
                    .tls_context(context.clone())
                    .build()
            },
        ),
    )
}

/// A failed call in a few words: the status and AWS's error code and message. Never the
/// SDK's full error context, which embeds the raw response (kilobytes of HTML from a proxy)
/// and ended up in a warning every 10 s.
fn describe<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> String {
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match (ctx.err().code(), ctx.err().message()) {
                (Some(code), Some(message)) => format!("HTTP {status}: {code}: {message}"),
                (Some(code), None) => format!("HTTP {status}: {code}"),
                _ => format!("HTTP {status}, with no AWS error code"),
            }
        }
        SdkError::ResponseError(r) => {
            format!("unreadable answer (HTTP {})", r.raw().status().as_u16())
        }
        SdkError::TimeoutError(_) => "no answer in time".into(),
        SdkError::DispatchFailure(d) if d.is_timeout() => "connection timed out".into(),
        SdkError::DispatchFailure(d) if d.is_io() => "connection failed".into(),
        SdkError::DispatchFailure(_) => "the request could not be sent".into(),
        SdkError::ConstructionFailure(_) => {
            "the request could not be built (are credentials available?)".into()
        }
        _ => "failed".into(),
    }
}

impl Connector for KinesisFirehose {
    type Request = PutRequest;
    type Response = PutAnswer;

    fn hard_limits(&self) -> BatchLimits {
        config::HARD_LIMITS
    }

    fn encoded_len(&self, event: &Event) -> usize {
        encode::encoded_len(event, &self.delimiter)
    }

    fn encode(&self, shipment: Shipment<'_>) -> Result<Encoded<PutRequest>, EncodeError> {
        let encoded = encode::encode(shipment, &self.delimiter, self.packing);
        let mut batch = PutRequest {
            records: Vec::with_capacity(encoded.records.len()),
            events_per_record: Vec::with_capacity(encoded.records.len()),
            bytes: 0,
        };
        for r in encoded.records {
            batch.bytes += r.data.len();
            batch.events_per_record.push(r.events);
            let record = Record::builder()
                .data(Blob::new(r.data))
                .build()
                .map_err(|e| EncodeError::Failed(e.to_string()))?;
            batch.records.push(record);
        }
        Ok(Encoded {
            request: batch,
            rejected: encoded.rejected,
            fixes: Vec::new(),
        })
    }

    fn request_size(&self, request: &PutRequest) -> usize {
        request.bytes
    }

    async fn send(&self, batch: &PutRequest) -> Result<PutAnswer, SendError> {
        let sent = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.stream)
            .set_records(Some(batch.records.clone()))
            .send()
            .await;
        match sent {
            Ok(out) => {
                let entries = out.request_responses();
                // One entry per record, in order; a missing entry counts as a failure.
                let failures = (0..batch.records.len())
                    .map(|i| match entries.get(i) {
                        Some(e) => e.error_code().map(str::to_owned),
                        None => Some("MissingResponseEntry".into()),
                    })
                    .collect();
                Ok(PutAnswer::Put {
                    failures,
                    events_per_record: batch.events_per_record.clone(),
                })
            }
            Err(SdkError::ServiceError(ctx)) => {
                let status = ctx.raw().status().as_u16();
                let err = ctx.err();
                Ok(PutAnswer::Failed {
                    code: err.code().unwrap_or("Unknown").to_string(),
                    message: err.message().unwrap_or_default().to_string(),
                    status,
                })
            }
            Err(SdkError::TimeoutError(_)) => Err(SendError::Timeout),
            Err(SdkError::DispatchFailure(e)) => Err(SendError::Connect(format!(
                "{:?}",
                e.as_connector_error().map(|c| c.to_string())
            ))),
            // A garbled answer, or a request the SDK could not build (often credentials that
            // are not yet available, e.g. IRSA token refresh): worth another attempt, bounded
            // by the retry policy.
            Err(e) => Err(SendError::Transport {
                message: describe(&e),
                retryable: true,
            }),
        }
    }

    fn classify(&self, answer: &PutAnswer, events: &[Event]) -> Verdict {
        classify::classify(answer, events.len())
    }

    async fn health(&self) -> Result<(), String> {
        self.check().await
    }
}
