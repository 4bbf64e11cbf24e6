//! How a connector's client reaches its destination: which certificates it trusts, which one it
//! presents (mTLS), and which proxy it goes through. Files are read once, when the settings
//! load: rotating them takes a restart (docs/security.md).

use rustls_pki_types::pem::{PemObject, SectionKind};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use switchyard_core::Secret;
use url::Url;

/// Everything about one connector's HTTP client that its settings choose.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub tls: Tls,
    pub proxy: Proxy,
    /// Set by [`ClientOptions::sharing_one_client`]: the one client that these options and
    /// their clones build, so that a connector's instances (one per customer) share one
    /// connection pool and one TLS configuration rather than each loading the root store.
    shared: Option<Arc<OnceLock<reqwest::Client>>>,
}

/// The HTTP client could not be built from its options.
#[derive(Debug, thiserror::Error)]
#[error("HTTP client: {0}")]
pub struct ClientError(String);

impl ClientOptions {
    pub fn new(tls: Tls, proxy: Proxy) -> Self {
        ClientOptions {
            tls,
            proxy,
            shared: None,
        }
    }

    /// These options, building one client for all their clones. The client belongs to the
    /// tokio runtime it first runs on, so share it only within one pipeline.
    pub fn sharing_one_client(&self) -> ClientOptions {
        ClientOptions {
            shared: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// Whether `other` would build the same client (same trust, identity and proxy).
    pub fn builds_same_client_as(&self, other: &ClientOptions) -> bool {
        self.tls == other.tls && self.proxy == other.proxy
    }

    /// Whether a client can be built from these options: what files could not tell alone (a
    /// key that is not the certificate's, a certificate that does not parse).
    pub fn check(&self) -> Result<(), ClientError> {
        self.client().map(drop)
    }

    pub(crate) fn client(&self) -> Result<reqwest::Client, ClientError> {
        let Some(shared) = &self.shared else {
            return self.build_client();
        };
        if let Some(client) = shared.get() {
            return Ok(client.clone());
        }
        let built = self.build_client()?;
        // Two first instances may build at once: one client wins, the other is dropped.
        Ok(shared.get_or_init(|| built).clone())
    }

    fn build_client(&self) -> Result<reqwest::Client, ClientError> {
        let mut b = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        b = match &self.proxy {
            // reqwest reads HTTPS_PROXY and the rest itself when no proxy is named.
            Proxy::FromEnvironment => b,
            Proxy::Direct => b.no_proxy(),
            Proxy::Url(url) => b.proxy(reqwest::Proxy::all(url.as_str()).map_err(client_error)?),
        };
        if let Some(ca) = &self.tls.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(ca).map_err(client_error)?;
            b = if self.tls.system_roots {
                b.tls_certs_merge(roots)
            } else {
                b.tls_certs_only(roots)
            };
        }
        if let Some(identity) = &self.tls.identity_pem {
            let identity =
                reqwest::Identity::from_pem(identity.expose().as_bytes()).map_err(client_error)?;
            b = b.identity(identity);
        }
        b.build().map_err(client_error)
    }
}

fn client_error(e: reqwest::Error) -> ClientError {
    ClientError(crate::error_chain(&e))
}

/// Where a connector's traffic goes on its way to the destination.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// As `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` say (curl's rules), so a
    /// cluster-wide egress proxy applies without naming it in every connector.
    #[default]
    FromEnvironment,
    /// Straight to the destination, whatever the environment says.
    Direct,
    /// Every request through this HTTP proxy (CONNECT for https); the environment is ignored.
    Url(Url),
}

impl Proxy {
    /// `"none"` for [`Proxy::Direct`], otherwise an `http://` or `https://` proxy URL.
    pub fn parse(text: &str) -> Result<Proxy, String> {
        if text == "none" {
            return Ok(Proxy::Direct);
        }
        // The message never repeats the text: a proxy URL may carry a password.
        let url = Url::parse(text).map_err(|e| format!("is not a URL ({e}); or say \"none\""))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an http:// or https:// proxy URL with a host, or \"none\"".into());
        }
        Ok(Proxy::Url(url))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proxy::FromEnvironment => f.write_str("FromEnvironment"),
            Proxy::Direct => f.write_str("Direct"),
            // Its user and password stay out.
            Proxy::Url(u) => write!(
                f,
                "Url({}://{}:{})",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            ),
        }
    }
}

/// Whom the client trusts and who it is, as PEM read from the settings' files.
#[derive(Clone)]
pub struct Tls {
    ca_pem: Option<Vec<u8>>,
    /// Whether the system's roots are trusted too (without `ca_pem` they always are).
    system_roots: bool,
    /// Certificate chain and private key, as one PEM text.
    identity_pem: Option<Secret>,
}

impl Tls {
    /// The PEM certificates trusted besides (or instead of) the system's roots.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    pub fn trusts_system_roots(&self) -> bool {
        self.system_roots
    }

    /// Whether a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity_pem.is_some()
    }
}

/// Same trust and identity: compared by content, the identity's key included (it never
/// leaves the process).
impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.ca_pem == other.ca_pem
            && self.system_roots == other.system_roots
            && self.identity_pem.as_ref().map(Secret::expose)
                == other.identity_pem.as_ref().map(Secret::expose)
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            ca_pem: None,
            system_roots: true,
            identity_pem: None,
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca_pem.is_some())
            .field("system_roots", &self.system_roots)
            .field("client_certificate", &self.identity_pem.is_some())
            .finish()
    }
}

/// The `[connectors.<id>.tls]` keys: paths, as a Kubernetes Secret or ConfigMap mounts them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificates to trust (a private CA, a proxy that re-signs).
    pub ca_file: Option<PathBuf>,
    /// False: trust `ca_file` only, not the system's roots.
    pub trust_system_roots: bool,
    /// The client certificate (chain) presented for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            ca_file: None,
            trust_system_roots: true,
            cert_file: None,
            key_file: None,
        }
    }
}

/// One thing wrong with the TLS files; [`TlsError::key`] names the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM: {message}", path.display())]
    NotPem {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{} holds {found} PEM private keys; it must hold exactly one", path.display())]
    KeyCount {
        key: &'static str,
        path: PathBuf,
        found: usize,
    },
    #[error("is set without {missing}: give both or neither")]
    Unpaired {
        key: &'static str,
        missing: &'static str,
    },
    #[error("is false without ca_file: nothing would be trusted")]
    NothingTrusted,
}

impl TlsError {
    /// The key under `tls` this is about.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::NotPem { key, .. }
            | TlsError::NoCertificate { key, .. }
            | TlsError::KeyCount { key, .. }
            | TlsError::Unpaired { key, .. } => key,
            TlsError::NothingTrusted => "trust_system_roots",
        }
    }
}

impl Tls {
    /// Reads and checks the files; every problem is listed.
    pub fn load(files: &TlsFiles) -> Result<Tls, Vec<TlsError>> {
        let mut errors = Vec::new();
        let mut tls = Tls {
            system_roots: files.trust_system_roots,
            ..Tls::default()
        };
        if let Some(path) = &files.ca_file {
            tls.ca_pem = certificates("ca_file", path)
                .map_err(|e| errors.push(e))
                .ok();
        } else if !files.trust_system_roots {
            errors.push(TlsError::NothingTrusted);
        }
        match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => {
                let cert = certificates("cert_file", cert).map_err(|e| errors.push(e));
                let key = private_key(key).map_err(|e| errors.push(e));
                if let (Ok(mut pem), Ok(key)) = (cert, key) {
                    pem.push(b'\n');
                    pem.extend_from_slice(key.expose().as_bytes());
                    tls.identity_pem = Some(Secret::new(String::from_utf8_lossy(&pem)));
                }
            }
            (Some(_), None) => errors.push(TlsError::Unpaired {
                key: "cert_file",
                missing: "key_file",
            }),
            (None, Some(_)) => errors.push(TlsError::Unpaired {
                key: "key_file",
                missing: "cert_file",
            }),
            (None, None) => {}
        }
        if errors.is_empty() {
            Ok(tls)
        } else {
            Err(errors)
        }
    }
}

type Section = (SectionKind, Vec<u8>);

/// The file's PEM text if it holds at least one certificate.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(key, path)?;
    let mut found = 0;
    for section in Section::pem_slice_iter(&pem) {
        let (kind, _) = section.map_err(|e| TlsError::NotPem {
            key,
            path: path.into(),
            message: e.to_string(),
        })?;
        found += usize::from(kind == SectionKind::Certificate);
    }
    if found == 0 {
        return Err(TlsError::NoCertificate {
            key,
            path: path.into(),
        });
    }
    Ok(pem)
}

/// The file's PEM text if it holds exactly one private key. Errors never quote the file.
fn private_key(path: &Path) -> Result<Secret, TlsError> {
    let key = "key_file";
    let pem = read(key, path)?;
    let mut found = 0;
    for section in Section::pem_slice_iter(&pem) {
        let (kind, _) = section.map_err(|_| TlsError::NotPem {
            key,
            path: path.into(),
            message: "a section does not decode".into(),
        })?;
        found += usize::from(matches!(
            kind,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        ));
    }
    if found != 1 {
        return Err(TlsError::KeyCount {
            key,
            path: path.into(),
            found,
        });
    }
    String::from_utf8(pem)
        .map(Secret::new)
        .map_err(|_| TlsError::NotPem {
            key,
            path: path.into(),
            message: "is not UTF-8 text".into(),
        })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_a_url_or_none_and_its_password_is_never_shown() {
        assert_eq!(Proxy::parse("none"), Ok(Proxy::Direct));
        let p = Proxy::parse("http://user:hunter2@proxy:3128").unwrap();
        assert_eq!(format!("{p:?}"), "Url(http://proxy:3128)");
        for bad in [
            "proxy:3128",
            "socks5://p:1080",
            "ftp://p",
            "http://pass:hunter2@",
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    /// A client that cannot be built is an error saying why, never reqwest's default client
    /// (which would send without the configured identity), shared or not.
    #[test]
    fn a_client_that_cannot_be_built_is_an_error_not_a_default_client() {
        let opts = ClientOptions::new(
            Tls {
                ca_pem: None,
                system_roots: true,
                // A certificate with no private key: not an identity.
                identity_pem: Some(Secret::new(
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                )),
            },
            Proxy::Direct,
        );
        let e = opts.check().unwrap_err().to_string();
        assert!(e.starts_with("HTTP client: "), "{e}");
        let shared = opts.sharing_one_client();
        assert!(shared.client().is_err());
        assert!(
            shared.client().is_err(),
            "no default client was kept for the next call"
        );
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("switchyard-http-{}", std::process::id()))
    }

    fn file(name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(scratch()).unwrap();
        let path = scratch().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const NOT_A_CERT: &str = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";

    #[test]
    fn every_file_problem_names_its_key_and_never_the_keys_content() {
        let files = TlsFiles {
            ca_file: Some(file("ca.pem", NOT_A_CERT)),
            trust_system_roots: true,
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some(file("two-keys.pem", &format!("{KEY}{KEY}"))),
        };
        let errors = Tls::load(&files).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(TlsError::key).collect();
        assert_eq!(keys, ["ca_file", "cert_file", "key_file"]);
        let shown = format!("{errors:?} {}", errors[2]);
        assert!(shown.contains("2 PEM private keys"), "{shown}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");

        let alone = TlsFiles {
            cert_file: Some(file("c.pem", NOT_A_CERT)),
            trust_system_roots: false,
            ..TlsFiles::default()
        };
        let keys: Vec<&str> = Tls::load(&alone)
            .unwrap_err()
            .iter()
            .map(TlsError::key)
            .collect();
        assert_eq!(keys, ["trust_system_roots", "cert_file"]);
        std::fs::remove_dir_all(scratch()).unwrap();
    }

    #[test]
    fn debug_shows_what_is_configured_but_no_key() {
        let tls = Tls {
            ca_pem: Some(b"ca".to_vec()),
            system_roots: false,
            identity_pem: Some(Secret::new(KEY)),
        };
        let shown = format!("{tls:?}");
        assert!(
            shown.contains("ca: true") && shown.contains("client_certificate: true"),
            "{shown}"
        );
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
