//! The seam between the binary and the destination crates.
//!
//! A destination crate implements [`Destination`] on its config type and exports one
//! [`Descriptor`] (`descriptor::<MyConfig>()`). The binary keeps a single list of
//! descriptors, and settings, the pipeline, the demo, `validate` and the benches loop over it:
//! adding a kind is one crate and one line in that list. Everything past parsing goes through
//! [`ConnectorConfig`], one non-generic type, so a connector can also be built later, at run
//! time, from configuration alone.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use switchyard_core::Wiring;
use switchyard_core::config::typed;
use switchyard_core::route::ConnectorIndex;
use switchyard_core::{
    BatchLimits, Connector, ConnectorHandle, EncodeError, Engine, EngineSettings, Problem, Shipment,
};
use switchyard_http::ClientOptions;

/// What a destination kind declares about itself. Implemented by the kind's config type: the
/// `[connectors.<id>]` keys that are not common to every connector.
pub trait Destination: DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// The `kind = "…"` that selects it.
    const KIND: &'static str;
    /// Its keys that hold credentials: a literal value written in the file is warned about.
    const SECRET_KEYS: &'static [&'static str];
    /// Batch limits when the file sets none.
    const DEFAULT_LIMITS: BatchLimits;
    /// The API's own limits; configured ones are clamped to these.
    const HARD_LIMITS: BatchLimits;
    /// Keys it has renamed, `(old, new)`: the old name still loads, with a warning.
    const RENAMED_KEYS: &'static [(&'static str, &'static str)] = &[];
    /// Whether its client can present a TLS client certificate (`tls.cert_file`).
    const CLIENT_CERTIFICATES: bool = true;

    type Connector: Connector;
    type Error: std::error::Error + Send + Sync + 'static;

    /// What is wrong beyond the types, as `(key, message)`.
    fn problems(&self) -> Vec<(&'static str, String)>;

    /// The connector these settings describe.
    fn connect(
        &self,
        client: &ClientOptions,
    ) -> impl Future<Output = Result<Self::Connector, Self::Error>> + Send;

    /// The keys and values that point it at a local stand-in listening at `url` and
    /// expecting `credential` (the demo and the benches write them over the file's).
    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)>;

    /// What a minimal stand-in (`make bench`'s) must know of the protocol to answer it.
    fn wire(&self) -> Wire;

    /// Lines `validate` prints under the connector about how it delivers, beyond its
    /// batches (HEC: indexer acknowledgement and its knobs). None by default.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts this kind's stand-in from `switchyard-testkit`, expecting `credential`, for the
    /// demo. Crates provide it behind their `stand-in` feature.
    fn start_stand_in(
        &self,
        credential: &str,
    ) -> impl Future<Output = Result<StandIn, String>> + Send {
        let _ = credential;
        async { Err(format!("{} has no stand-in in this build", Self::KIND)) }
    }
}

/// What `make bench`'s stand-ins know of a destination's protocol: where the credential is,
/// how events sit in a body, and what the answers look like. Nothing else is checked there;
/// the strict fakes of the test suite check the rest.
#[derive(Debug, Clone)]
pub struct Wire {
    /// Whether a request's headers carry `credential`.
    pub authorized: fn(header: Headers<'_>, credential: &str) -> bool,
    /// A header value that marks a request as a health check, besides any GET.
    pub health_request: Option<(&'static str, &'static str)>,
    pub framing: Framing,
    /// The success status, and the answer's body for a request of `n` records.
    pub accepted: (u16, fn(n: usize) -> String),
    /// The answer's body to a health check.
    pub healthy: String,
    pub content_type: &'static str,
}

/// A request's header values by lowercase name.
pub type Headers<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How events sit in a request's (decoded) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each event's JSON appears in the body as it is (JSON lines, arrays, envelopes,
    /// protobuf strings).
    Embedded,
    /// A Firehose `PutRecordBatch`: JSON whose records' `Data` is base64.
    FirehoseRecords,
}

/// A running local stand-in for a destination (the demo's). Stops when dropped.
pub struct StandIn {
    pub url: String,
    received: Box<dyn Fn() -> u64 + Send + Sync>,
    down: Box<dyn Fn(bool) + Send + Sync>,
}

impl StandIn {
    /// `received` counts the events it accepted; `down(true)` makes it answer 503 to every
    /// delivery, `down(false)` brings it back. Both closures keep the server alive.
    pub fn new(
        url: String,
        received: impl Fn() -> u64 + Send + Sync + 'static,
        down: impl Fn(bool) + Send + Sync + 'static,
    ) -> StandIn {
        StandIn {
            url,
            received: Box::new(received),
            down: Box::new(down),
        }
    }

    pub fn received(&self) -> u64 {
        (self.received)()
    }

    pub fn set_down(&self, down: bool) {
        (self.down)(down)
    }
}

/// From a URL and the two closures of [`StandIn::new`] (testkit's `stand_in_parts`).
impl<R, D> From<(String, R, D)> for StandIn
where
    R: Fn() -> u64 + Send + Sync + 'static,
    D: Fn(bool) + Send + Sync + 'static,
{
    fn from((url, received, down): (String, R, D)) -> StandIn {
        StandIn::new(url, received, down)
    }
}

/// A destination kind, as the binary's list holds it.
#[derive(Clone, Copy)]
pub struct Descriptor {
    pub kind: &'static str,
    pub secret_keys: &'static [&'static str],
    pub default_limits: BatchLimits,
    pub hard_limits: BatchLimits,
    pub renamed_keys: &'static [(&'static str, &'static str)],
    pub client_certificates: bool,
    parse: Parse,
}

/// A kind's parser: its keys at a path, to its config or problems.
type Parse = fn(Value, &str, &mut Vec<Problem>) -> Option<Arc<dyn ConnectorConfig>>;

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("kind", &self.kind)
            .finish()
    }
}

/// The descriptor of kind `D`.
pub const fn descriptor<D: Destination>() -> Descriptor {
    Descriptor {
        kind: D::KIND,
        secret_keys: D::SECRET_KEYS,
        default_limits: D::DEFAULT_LIMITS,
        hard_limits: D::HARD_LIMITS,
        renamed_keys: D::RENAMED_KEYS,
        client_certificates: D::CLIENT_CERTIFICATES,
        parse: parse::<D>,
    }
}

impl Descriptor {
    /// The kind's own keys of the connector at `path` (common keys already taken out),
    /// deserialized strictly and then checked; every problem is reported with its key path.
    /// None only when the keys do not deserialize.
    pub fn parse(
        &self,
        fields: Map<String, Value>,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<Arc<dyn ConnectorConfig>> {
        (self.parse)(Value::Object(fields), path, problems)
    }
}

fn parse<D: Destination>(
    fields: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn ConnectorConfig>> {
    let cfg = typed::<D>(fields, path, problems)?;
    for (key, message) in cfg.problems() {
        problems.push(Problem::new(&format!("{path}.{key}"), &message));
    }
    // Returned even with problems: a disabled connector may load with those its unset
    // variables cause, and the caller decides which problems count.
    Some(Arc::new(cfg))
}

/// A boxed future, for the object-safe side of the seam.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connector's kind-specific settings behind one type: what the pipeline builds from and
/// what the demo and benches point at stand-ins. Implemented for every [`Destination`].
pub trait ConnectorConfig: fmt::Debug + Send + Sync + 'static {
    fn kind(&self) -> &'static str;

    /// Builds the connector and starts its worker on the current tokio runtime.
    fn spawn<'a>(
        &'a self,
        id: &'a str,
        index: ConnectorIndex,
        client: &'a ClientOptions,
        engine: EngineSettings,
        wiring: Wiring,
    ) -> BoxFuture<'a, Result<ConnectorHandle, String>>;

    /// See [`Destination::stand_in_settings`].
    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)>;

    /// See [`Destination::wire`].
    fn wire(&self) -> Wire;

    /// See [`Destination::notes`].
    fn notes(&self) -> Vec<String>;

    /// See [`Destination::start_stand_in`].
    fn start_stand_in<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, Result<StandIn, String>>;

    /// The connector's encoder on its own, built but never started (`make bench-micro`).
    fn encoder<'a>(
        &'a self,
        client: &'a ClientOptions,
    ) -> BoxFuture<'a, Result<Box<dyn RequestEncoder>, String>>;

    /// The concrete config, for code (tests, the benches) that knows the kind.
    fn as_any(&self) -> &dyn Any;
}

/// A connector's encoder on its own: what a request of a shipment's events puts on the wire.
pub trait RequestEncoder: Send + Sync {
    /// Encodes `shipment` as the connector would send it; returns the request's size on the
    /// wire (compressed, where the connector compresses).
    fn encoded_size(&self, shipment: Shipment<'_>) -> Result<usize, EncodeError>;
}

impl<C: Connector> RequestEncoder for C {
    fn encoded_size(&self, shipment: Shipment<'_>) -> Result<usize, EncodeError> {
        let encoded = Connector::encode(self, shipment)?;
        Ok(self.request_size(&encoded.request))
    }
}

impl<D: Destination> ConnectorConfig for D {
    fn kind(&self) -> &'static str {
        D::KIND
    }

    fn spawn<'a>(
        &'a self,
        id: &'a str,
        index: ConnectorIndex,
        client: &'a ClientOptions,
        engine: EngineSettings,
        wiring: Wiring,
    ) -> BoxFuture<'a, Result<ConnectorHandle, String>> {
        Box::pin(async move {
            let connector = self.connect(client).await.map_err(|e| e.to_string())?;
            Ok(Engine::spawn(connector, id, index, engine, wiring))
        })
    }

    fn stand_in_settings(&self, url: &str, credential: &str) -> Vec<(&'static str, String)> {
        Destination::stand_in_settings(self, url, credential)
    }

    fn wire(&self) -> Wire {
        Destination::wire(self)
    }

    fn notes(&self) -> Vec<String> {
        Destination::notes(self)
    }

    fn start_stand_in<'a>(&'a self, credential: &'a str) -> BoxFuture<'a, Result<StandIn, String>> {
        Box::pin(Destination::start_stand_in(self, credential))
    }

    fn encoder<'a>(
        &'a self,
        client: &'a ClientOptions,
    ) -> BoxFuture<'a, Result<Box<dyn RequestEncoder>, String>> {
        Box::pin(async move {
            let connector = self.connect(client).await.map_err(|e| e.to_string())?;
            Ok(Box::new(connector) as Box<dyn RequestEncoder>)
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl dyn ConnectorConfig {
    /// The concrete config if it is a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}
