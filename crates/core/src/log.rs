//! Warnings that stay readable when something breaks for hours: each kind is logged at most
//! once per interval (with how many were held back), and free text from outside, such as an
//! error a destination returned, is clipped so a response body cannot flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest outside text a log line or status carries.
pub const MAX_DETAIL_CHARS: usize = 200;

/// `text` cut to [`MAX_DETAIL_CHARS`] characters, whitespace runs (newlines in a response
/// body) folded to one space.
pub fn clip(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DETAIL_CHARS + 3));
    let mut chars = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if chars == MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        if space {
            out.push(' ');
            chars += 1;
            space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// Lets one line per key through per interval.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    /// Per key: when it was last let through, and how many were held back since.
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last one)` when a line for `key` may be logged now.
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return Some(0); // a panicked logger elsewhere: log rather than lose the line
        };
        match last.get_mut(key) {
            Some((at, held)) if now.saturating_duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                (*at, *held) = (now, 0);
                Some(n)
            }
            None => {
                last.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_bounds_and_folds_a_response_body() {
        let body = format!("<html>\n  <body>{}</body>\n</html>", "x".repeat(3000));
        let c = clip(&body);
        assert_eq!(c.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(c.starts_with("<html> <body>xxx") && c.ends_with('…'), "{c}");
        assert_eq!(clip("  short\n"), "short");
        assert_eq!(
            clip(&"é".repeat(MAX_DETAIL_CHARS)),
            "é".repeat(MAX_DETAIL_CHARS)
        );
    }

    #[test]
    fn throttle_lets_one_line_per_key_and_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.allow_at("a", t0), Some(0));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(t.allow_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(62)), None);
    }
}
