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
        string_or_number(d).map(Secret)
    }
}

/// A string that may arrive as a number: a `SWITCHYARD__…` override such as an all-digit
/// account id or key is parsed as one before it reaches the field.
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_value_is_read_as_its_digits() {
        let s: Secret = serde_json::from_value(serde_json::json!(1234567)).unwrap();
        assert_eq!(s.expose(), "1234567");
        let s: Secret = serde_json::from_value(serde_json::json!("abc")).unwrap();
        assert_eq!(s.expose(), "abc");
        assert!(serde_json::from_value::<Secret>(serde_json::json!(true)).is_err());
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("11111111-2222-3333-4444-555555555555");
        assert!(!format!("{s:?}").contains("1111"));
        assert!(!format!("{s}").contains("1111"));
        assert_eq!(s.expose(), "11111111-2222-3333-4444-555555555555");
    }
}
