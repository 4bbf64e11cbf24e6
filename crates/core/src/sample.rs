//! Sampling per connector (docs/payloads.md): a connector with `sample_rate` takes a share of
//! the sessions, each wholly or not at all, decided the same way by every process.
//!
//! The decision is a hash of the session key's value compared with the rate. The hash is
//! spelled out here (FNV-1a 64 over the value's bytes, then MurmurHash3's 64-bit finalizer)
//! rather than taken from `std`, whose `DefaultHasher` may change between Rust versions and
//! whose `RandomState` differs between processes: replicas and restarts must agree on every
//! session, and the golden tests below pin the algorithm.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::cell::Cell;
use std::fmt;

/// Where the session id is unless a connector says otherwise.
pub const DEFAULT_SAMPLE_KEY: &str = "user_details.content_session_id";

/// Why a sampling setting cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("must be a number above 0 and at most 1, not {0}")]
    Rate(f64),
    #[error("must be a dotted path of non-empty field names, not {0:?}")]
    Key(String),
}

/// A connector's sampling: the share of sessions it takes and where the session id is.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    rate: f64,
    key: String,
    path: Vec<String>,
    /// A session is taken when its hash is below this; None when every one is (rate 1).
    threshold: Option<u64>,
}

/// What sampling made of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Taken,
    SampledOut,
    /// The event has no session key, or its value is not a string or a number: it cannot be
    /// grouped, so it is taken rather than silently dropped.
    NoKey,
}

impl Sample {
    /// `rate` in (0, 1]; `key` a dotted path such as `user_details.content_session_id`.
    pub fn new(rate: f64, key: &str) -> Result<Sample, SampleError> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(SampleError::Rate(rate));
        }
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(SampleError::Key(key.to_owned()));
        }
        // rate × 2^64, saturating: below 1 it always fits in a u64.
        let threshold = (rate < 1.0).then(|| (rate * 2f64.powi(64)) as u64);
        Ok(Sample {
            rate,
            key: key.to_owned(),
            path,
            threshold,
        })
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The dotted path of the session key, as configured.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this connector takes the event `json`, by its session key's value.
    pub fn decide(&self, json: &[u8]) -> Decision {
        let Some(threshold) = self.threshold else {
            return Decision::Taken;
        };
        match session_hash(json, &self.path) {
            None => Decision::NoKey,
            Some(h) if h < threshold => Decision::Taken,
            Some(_) => Decision::SampledOut,
        }
    }

    /// Whether a session whose key is `value` (a string's text, or a number's JSON text) is
    /// taken.
    pub fn takes_session(&self, value: &str) -> bool {
        self.threshold.is_none_or(|t| hash(value.as_bytes()) < t)
    }
}

/// The session hash: FNV-1a 64, then MurmurHash3's `fmix64` so that the high bits, which the
/// rate compares, depend on every byte.
pub fn hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The hash of the value at `path` in the JSON object `json`: a string's unescaped text, or
/// a number's text as written. None when there is no such value or it is something else.
/// One scan of the event, without building a tree or copying anything but escaped strings.
fn session_hash(json: &[u8], path: &[String]) -> Option<u64> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let found = Cell::new(None);
    // Once the value is hashed the scan stops, by an error it makes for the purpose: the
    // rest of the event needs no reading. The first of duplicate keys therefore counts.
    let walked = Walk(path, &found).deserialize(&mut de);
    found.get().or(walked.ok().flatten())
}

/// Finds the value at the remaining path segments and hashes it into the cell.
struct Walk<'p>(&'p [String], &'p Cell<Option<u64>>);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<u64>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
        if self.0.is_empty() {
            let raw = <&'de RawValue as de::Deserialize>::deserialize(d)?;
            let hash = leaf_hash(raw.get());
            if hash.is_some() {
                self.1.set(hash);
                return Err(de::Error::custom("found: the scan stops here"));
            }
            return Ok(None);
        }
        d.deserialize_any(self)
    }
}

/// A string is hashed by its text, a number by its JSON text; nothing else is a session id.
fn leaf_hash(raw: &str) -> Option<u64> {
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<HashStr>(raw).ok().map(|h| h.0),
        b'-' | b'0'..=b'9' => Some(hash(raw.as_bytes())),
        _ => None,
    }
}

/// A JSON string's hash, borrowed or unescaped into serde's scratch buffer.
struct HashStr(u64);

impl<'de> de::Deserialize<'de> for HashStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<HashStr, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HashStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HashStr, E> {
                Ok(HashStr(hash(v.as_bytes())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
        let (first, rest) = (&self.0[0], &self.0[1..]);
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(first))? {
            if matches {
                found = map.next_value_seed(Walk(rest, self.1))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<u64>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
        Ok(None)
    }
}

/// Whether a map key is the path segment, compared without copying it.
struct KeyIs<'s>(&'s str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(session: &str) -> String {
        format!(
            r#"{{"event":{{"type":"heartbeat","timestamp":1}},"user_details":{{"ip":"x","content_session_id":"{session}","n":[1,{{"a":2}}]}},"z":null}}"#
        )
    }

    fn default(rate: f64) -> Sample {
        Sample::new(rate, DEFAULT_SAMPLE_KEY).unwrap()
    }

    /// Pins the algorithm: replicas of different versions must agree on every session. If
    /// this fails, the hash changed, and every sampled connector would take other sessions
    /// after an upgrade.
    #[test]
    fn the_hash_is_pinned() {
        // Computed by an independent implementation (a few lines of Python) of the same
        // definition.
        assert_eq!(hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(
            hash(b"1f6b8b2e-4c1e-4bd0-9f0e-6f1f7c2b9a11"),
            0xba78_86a4_6fab_54b5
        );
    }

    #[test]
    fn golden_sessions_keep_their_decisions() {
        let s = default(0.25);
        let taken: Vec<bool> = (0..16)
            .map(|i| s.takes_session(&format!("session-{i}")))
            .collect();
        assert_eq!(
            taken,
            [
                false, false, true, true, true, true, false, false, false, false, false, false,
                true, false, false, false
            ]
        );
    }

    #[test]
    fn the_rate_holds_over_many_sessions() {
        for rate in [0.01, 0.25, 0.5, 0.9] {
            let s = default(rate);
            let n = 100_000;
            let taken = (0..n)
                .filter(|i| s.takes_session(&format!("{i:08x}-session")))
                .count() as f64;
            let expected = rate * n as f64;
            // Five binomial standard deviations: a correct hash fails this about once in
            // 1.7 million runs, and a biased one (all taken, all left) at once.
            let sigma = (n as f64 * rate * (1.0 - rate)).sqrt();
            assert!(
                (taken - expected).abs() <= 5.0 * sigma,
                "rate {rate}: took {taken} of {n}, expected {expected} ± {}",
                5.0 * sigma
            );
        }
    }

    #[test]
    fn every_event_of_a_session_gets_the_same_decision() {
        let s = default(0.5);
        for i in 0..200 {
            let id = format!("s{i}");
            let first = s.decide(event(&id).as_bytes());
            let other = format!(
                r#"{{"user_details":{{"content_session_id":"{id}"}},"event":{{"type":"stall_start","timestamp":99}}}}"#
            );
            assert_eq!(s.decide(other.as_bytes()), first, "session {id}");
            let expected = if s.takes_session(&id) {
                Decision::Taken
            } else {
                Decision::SampledOut
            };
            assert_eq!(first, expected);
        }
    }

    #[test]
    fn escaped_strings_and_numbers_are_hashed_by_their_text() {
        let s = default(0.5);
        let plain = s.decide(br#"{"user_details":{"content_session_id":"ab"}}"#);
        let escaped = s.decide(br#"{"user_details":{"content_session_id":"a\u0062"}}"#);
        assert_eq!(plain, escaped);
        let k = Sample::new(0.5, "sid").unwrap();
        let by_text = if k.takes_session("12345") {
            Decision::Taken
        } else {
            Decision::SampledOut
        };
        assert_eq!(k.decide(br#"{"sid":12345}"#), by_text);
        // The scan stops at the first value found: a repeated key does not change it.
        let sessions = (0..64).map(|i| format!("s{i}"));
        let (a, b) = sessions
            .clone()
            .find_map(|a| {
                let b = sessions
                    .clone()
                    .find(|b| k.takes_session(b) != k.takes_session(&a))?;
                Some((a, b))
            })
            .unwrap();
        let first = k.decide(format!(r#"{{"sid":"{a}","x":[1,{{}}],"sid":"{b}"}}"#).as_bytes());
        let expected = if k.takes_session(&a) {
            Decision::Taken
        } else {
            Decision::SampledOut
        };
        assert_eq!(first, expected);
    }

    #[test]
    fn events_without_a_usable_key_are_taken() {
        let s = default(0.000_001);
        for json in [
            r#"{"event":{"timestamp":1}}"#,
            r#"{"user_details":{"content_session_id":null}}"#,
            r#"{"user_details":{"content_session_id":true}}"#,
            r#"{"user_details":{"content_session_id":{"a":1}}}"#,
            r#"{"user_details":"not an object"}"#,
            r#"{"user_details":[{"content_session_id":"x"}]}"#,
        ] {
            assert_eq!(s.decide(json.as_bytes()), Decision::NoKey, "{json}");
        }
    }

    #[test]
    fn rate_one_takes_everything_and_bad_settings_are_refused() {
        let all = default(1.0);
        assert!((0..1000).all(|i| all.takes_session(&i.to_string())));
        assert_eq!(all.decide(event("x").as_bytes()), Decision::Taken);
        for rate in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(Sample::new(rate, "a"), Err(SampleError::Rate(_))));
        }
        for key in ["", "a..b", ".a", "a."] {
            assert_eq!(Sample::new(0.5, key), Err(SampleError::Key(key.to_owned())));
        }
    }

    /// The decisions a fresh process makes: `SWITCHYARD_SAMPLE_CHILD` set, this test prints
    /// them, and the parent run compares. Two processes of one binary share no hasher state,
    /// so a hash seeded per process (as `RandomState` is) fails this.
    #[test]
    fn decisions_are_the_same_in_another_process() {
        let s = default(0.3);
        let decisions: String = (0..2000)
            .map(|i| {
                if s.takes_session(&format!("proc-{i}")) {
                    '1'
                } else {
                    '0'
                }
            })
            .collect();
        if std::env::var_os("SWITCHYARD_SAMPLE_CHILD").is_some() {
            println!("DECISIONS={decisions}");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "sample::tests::decisions_are_the_same_in_another_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SWITCHYARD_SAMPLE_CHILD", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        // The harness may print the test's name on the same line.
        let child = stdout
            .split("DECISIONS=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the child printed no decisions: {stdout}"));
        assert_eq!(child, decisions);
        assert!(decisions.contains('1') && decisions.contains('0'));
    }
}
