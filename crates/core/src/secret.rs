//! A string that must never reach a log line, an error message or `Debug` output.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// A token or API key. `Debug` and `Display` print a placeholder; only [`Secret::expose`]
/// gives the value, so every place that sends it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("11111111-2222-3333-4444-555555555555");
        assert!(!format!("{s:?}").contains("1111"));
        assert!(!format!("{s}").contains("1111"));
        assert_eq!(s.expose(), "11111111-2222-3333-4444-555555555555");
    }
}
