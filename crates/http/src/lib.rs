//! The HTTP transport shared by the HTTP destinations: one pooled client, bodies sent as
//! prepared bytes, transport failures mapped to the engine's [`SendError`], and `Retry-After`
//! read once here rather than in each destination. [`client`] holds what settings choose of
//! the client: trusted CAs, a client certificate, a proxy. [`destination`] is the glue every
//! HTTP destination shares: an API implements [`HttpApi`] and runs as an [`HttpDestination`].

pub mod client;
pub mod destination;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime};
use switchyard_core::compress::{BodyWriter, CompressError};
use switchyard_core::{Secret, SendError};

pub use client::{ClientError, ClientOptions, Proxy, Tls, TlsError, TlsFiles};
pub use destination::{Answered, HealthProbe, HttpApi, HttpDestination};
pub use reqwest::StatusCode;
pub use url::Url;

/// A finished HTTP exchange, as the destination's classifier sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// A prepared request body.
#[derive(Debug, Clone)]
pub struct HttpBody {
    pub bytes: Bytes,
    /// `Content-Encoding`, e.g. `gzip`.
    pub encoding: Option<&'static str>,
}

impl TryFrom<BodyWriter> for HttpBody {
    type Error = CompressError;

    /// The finished body, with the `Content-Encoding` of its compression.
    fn try_from(body: BodyWriter) -> Result<Self, CompressError> {
        let (bytes, encoding) = body.finish()?;
        Ok(HttpBody {
            bytes: bytes.into(),
            encoding,
        })
    }
}

/// An HTTP client bound to one endpoint and its fixed headers (auth among them).
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    /// `Content-Type` of every POST body: JSON for every destination but OTLP's protobuf.
    content_type: &'static str,
}

/// A header value could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header {0} has characters HTTP does not allow")]
    Invalid(&'static str),
    /// A header named in the settings (not a value: values may be credentials).
    #[error("header {0:?} has a name or value HTTP does not allow")]
    InvalidNamed(String),
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // HeaderMap's Debug would print credentials.
        f.debug_struct("HttpTransport")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    pub fn new(url: Url, options: &ClientOptions) -> Result<Self, ClientError> {
        Ok(HttpTransport {
            client: options.client()?,
            url,
            headers: HeaderMap::new(),
            content_type: "application/json",
        })
    }

    /// Bodies are sent with this `Content-Type` instead of `application/json`.
    pub fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Result<Self, HeaderError> {
        let v = HeaderValue::from_str(value).map_err(|_| HeaderError::Invalid(name))?;
        self.headers.insert(HeaderName::from_static(name), v);
        Ok(self)
    }

    /// A credential header: marked sensitive so no HTTP layer logs it.
    pub fn secret_header(
        mut self,
        name: &'static str,
        prefix: &str,
        secret: &Secret,
    ) -> Result<Self, HeaderError> {
        let mut v = HeaderValue::from_str(&format!("{prefix}{}", secret.expose()))
            .map_err(|_| HeaderError::Invalid(name))?;
        v.set_sensitive(true);
        self.headers.insert(HeaderName::from_static(name), v);
        Ok(self)
    }

    /// A credential header whose name comes from the settings (OTLP vendors each choose
    /// theirs: `x-api-key`, `authorization`, …). Marked sensitive like [`Self::secret_header`].
    pub fn configured_secret_header(
        mut self,
        name: &str,
        secret: &Secret,
    ) -> Result<Self, HeaderError> {
        let invalid = || HeaderError::InvalidNamed(name.to_string());
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut v = HeaderValue::from_str(secret.expose()).map_err(|_| invalid())?;
        v.set_sensitive(true);
        self.headers.insert(n, v);
        Ok(self)
    }

    pub async fn post(&self, body: &HttpBody) -> Result<HttpResponse, SendError> {
        self.post_to(&self.url, body, &[]).await
    }

    /// POSTs `body` to `url` (another endpoint of the same API, with the same headers),
    /// adding `extra` headers whose values vary by request (HEC's channel).
    pub async fn post_to(
        &self,
        url: &Url,
        body: &HttpBody,
        extra: &[(&'static str, String)],
    ) -> Result<HttpResponse, SendError> {
        let mut req = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, self.content_type)
            .body(body.bytes.clone());
        for (name, value) in extra {
            req = req.header(*name, value);
        }
        if let Some(enc) = body.encoding {
            req = req.header(reqwest::header::CONTENT_ENCODING, enc);
        }
        let resp = req.send().await.map_err(transport_error)?;
        self.read(resp).await
    }

    pub async fn get(&self, url: Url) -> Result<HttpResponse, SendError> {
        let resp = self
            .client
            .get(url)
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(transport_error)?;
        self.read(resp).await
    }

    async fn read(&self, resp: reqwest::Response) -> Result<HttpResponse, SendError> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = resp.bytes().await.map_err(transport_error)?;
        Ok(HttpResponse {
            status,
            retry_after,
            body,
        })
    }
}

/// A configured endpoint: an absolute `http` or `https` URL with a host. The message names
/// what is wrong, for the key's problem.
pub fn endpoint_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{e}: {text:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(url)
}

/// What is wrong with a header a user configured, checked as the transport will build it
/// (so `validate` and startup agree). Never includes the value.
pub fn header_problem(name: &str, value: &str) -> Option<String> {
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Some(format!("{name:?} is not a valid header name"));
    }
    if HeaderValue::from_str(value).is_err() {
        return Some(format!(
            "{name:?} has a value with characters HTTP does not allow"
        ));
    }
    None
}

/// `Retry-After` in either of its forms (RFC 9110 10.2.3): delta-seconds, or an HTTP-date,
/// which is read as the time left until then (none if it has passed). How long the engine
/// actually waits is capped by the connector's `retry.max_backoff_ms` (core's retry module).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(seconds) = v.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn transport_error(e: reqwest::Error) -> SendError {
    // Without the URL the message names no endpoint detail, and reqwest never prints headers.
    let (timeout, connect, builder) = (e.is_timeout(), e.is_connect(), e.is_builder());
    let message = error_chain(&e.without_url());
    if timeout {
        SendError::Timeout
    } else if connect {
        SendError::Connect(message)
    } else {
        SendError::Transport {
            retryable: !builder,
            message,
        }
    }
}

/// The error and its causes, `outer: inner: …`: reqwest's own message ("error sending
/// request") hides why, such as which certificate check failed. None of them holds headers.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some layers repeat their cause in their own message.
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_an_absolute_http_url_with_a_host() {
        assert_eq!(
            endpoint_url("https://h:8088/x").unwrap().as_str(),
            "https://h:8088/x"
        );
        assert_eq!(
            endpoint_url("ftp://h").unwrap_err(),
            "scheme must be http or https, not \"ftp\""
        );
        assert!(
            endpoint_url("localhost:4566").is_err(),
            "a scheme is required"
        );
        assert!(
            endpoint_url("not a url")
                .unwrap_err()
                .contains("\"not a url\"")
        );
        assert!(endpoint_url("http://").is_err());
    }

    #[test]
    fn a_configured_header_is_checked_as_the_transport_builds_it() {
        assert_eq!(header_problem("x-api-key", "k 1"), None);
        assert!(header_problem("bad name", "v").is_some());
        assert!(header_problem("x", "line\nbreak").is_some());
        let e = header_problem("x", "bell\u{7}-s3cret").unwrap();
        assert!(!e.contains("s3cret"), "{e}");
        // What it accepts, the transport builds.
        assert!(
            HttpTransport::new(Url::parse("http://h/").unwrap(), &ClientOptions::default())
                .unwrap()
                .configured_secret_header("x-api-key", &Secret::new("k 1"))
                .is_ok()
        );
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_date_is_the_time_left() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        // A date already past: retry now (the engine's backoff still spaces attempts out).
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn debug_hides_headers() {
        let t = HttpTransport::new(
            Url::parse("http://127.0.0.1:1/x").unwrap(),
            &ClientOptions::default(),
        )
        .unwrap()
        .secret_header("authorization", "Splunk ", &Secret::new("s3cr3t-token"))
        .unwrap();
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_configured_header_is_checked_and_hidden() {
        let t = || {
            HttpTransport::new(
                Url::parse("http://127.0.0.1:1/x").unwrap(),
                &ClientOptions::default(),
            )
            .unwrap()
        };
        let ok = t()
            .configured_secret_header("X-Api-Key", &Secret::new("s3cr3t-key"))
            .unwrap();
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        assert!(ok.headers["x-api-key"].is_sensitive());
        let err = t()
            .configured_secret_header("bad name", &Secret::new("v"))
            .unwrap_err();
        assert!(matches!(err, HeaderError::InvalidNamed(ref n) if n == "bad name"));
        let err = t()
            .configured_secret_header("x-k", &Secret::new("line\nbreak"))
            .unwrap_err();
        assert!(!err.to_string().contains("break"), "{err}");
    }
}
