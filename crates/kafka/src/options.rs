//! Raw librdkafka properties from the settings, whose `Debug` hides the credentials among them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// librdkafka properties by name (`security.protocol`, `sasl.password`, …), passed through
/// as written. A map like any other, except that `Debug` prints `<redacted>` for every
/// [`is_sensitive`] property, since settings are printed whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions(BTreeMap<String, String>);

/// Whether librdkafka property `name` holds a credential: its CONFIGURATION.md marks these
/// sensitive (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `ssl_key`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`, and the OIDC
/// assertion's key and passphrase). The suffixes also catch properties added later in the
/// same style; the test fails if one of the listed ones stops matching.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let credential_suffix = [".password", ".secret", ".passphrase", ".pem", "_key"]
        .iter()
        .any(|s| name.ends_with(s));
    (credential_suffix && !is_public_pem(&name)) || name == "sasl.oauthbearer.config"
}

/// Certificates, not keys: worth seeing when debugging a TLS setup.
fn is_public_pem(name: &str) -> bool {
    matches!(name, "ssl.ca.pem" | "ssl.certificate.pem")
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &dyn fmt::Debug = if is_sensitive(k) { &Redacted } else { v };
                (k, shown)
            }))
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Deref for KafkaOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for KafkaOptions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, String)> for KafkaOptions {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        KafkaOptions(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, String>> for KafkaOptions {
    fn from(map: BTreeMap<String, String>) -> Self {
        KafkaOptions(map)
    }
}

impl<'a> IntoIterator for &'a KafkaOptions {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafkas_sensitive_properties_are_redacted_and_the_rest_shown() {
        let sensitive = [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "ssl_key",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "SASL.Password",
        ];
        let public = [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "ssl.ca.pem",
            "ssl.certificate.pem",
            "ssl.ca.location",
            "ssl.key.location",
            "session.timeout.ms",
        ];
        let options: KafkaOptions = sensitive
            .iter()
            .chain(&public)
            .map(|k| (k.to_string(), format!("value-of-{k}")))
            .collect();
        let shown = format!("{options:?}");
        for k in sensitive {
            assert!(is_sensitive(k), "{k}");
            assert!(!shown.contains(&format!("value-of-{k}")), "{k}: {shown}");
        }
        for k in public {
            assert!(!is_sensitive(k), "{k}");
            assert!(shown.contains(&format!("value-of-{k}")), "{k}: {shown}");
        }
    }
}
