//! A Kafka record's value as collectors write it: one event object, or a JSON array of event
//! objects (the vendor's own connector payload). An array is cut into its members' byte
//! ranges by one pass that checks the JSON without building a tree; each member is then
//! scanned as an event on its own, sharing the record's bytes. A member that is not an event
//! is refused alone: the others still go through.

use crate::event::{Envelope, Event, Malformed, MalformedReason, Origin};
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The bounds on one record.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The record's bytes, array or not (`router.max_event_bytes`).
    pub max_bytes: usize,
    /// The members of one array record (`router.max_array_members`).
    pub max_members: usize,
}

/// What one record holds.
#[derive(Debug)]
pub enum Record {
    /// The record is one event: the common shape, scanned exactly as before arrays existed.
    One(Event),
    /// The record is an array: its members in order, member `i` at index `i`. May be empty.
    Array(Vec<Member>),
}

/// One member of an array record.
pub type Member = Result<Event, BadMember>;

/// A member that is not an event, with what a dead letter of it needs.
#[derive(Debug)]
pub struct BadMember {
    /// The member's own bytes: a replay of its letter sees this one event.
    pub raw: Bytes,
    /// The record's origin, with the member's index.
    pub origin: Origin,
    pub malformed: Malformed,
}

/// Reads one record: an object is one event, an array is its members. Errors concern the
/// whole record (not JSON, too large, too many members, another JSON type).
pub fn parse(
    raw: Bytes,
    envelope: Option<Arc<Envelope>>,
    origin: Origin,
    limits: Limits,
) -> Result<Record, Malformed> {
    if first_byte(&raw) != Some(b'[') {
        return Event::parse_record(raw, envelope, origin, limits.max_bytes).map(Record::One);
    }
    if raw.len() > limits.max_bytes {
        return Err(Malformed {
            reason: MalformedReason::Oversize,
            detail: format!(
                "{} bytes is over max_event_bytes {}",
                raw.len(),
                limits.max_bytes
            ),
        });
    }
    let members = member_ranges(&raw, limits.max_members)?
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let origin = Origin {
                member: Some(i as u32),
                ..origin.clone()
            };
            let raw = raw.slice(range);
            Event::parse_record(
                raw.clone(),
                envelope.clone(),
                origin.clone(),
                limits.max_bytes,
            )
            .map_err(|m| BadMember {
                raw,
                origin,
                malformed: Malformed {
                    reason: m.reason,
                    detail: match m.detail.strip_prefix("the record is ") {
                        Some(what) => format!("array member {i} is {what}"),
                        None => format!("array member {i}: {}", m.detail),
                    },
                },
            })
        })
        .collect();
    Ok(Record::Array(members))
}

fn first_byte(raw: &[u8]) -> Option<u8> {
    raw.iter().find(|b| !b.is_ascii_whitespace()).copied()
}

/// The byte range of each member of the array `raw`. serde_json checks the whole array's
/// syntax while handing out each member as a borrowed `RawValue`: no tree, no copy.
fn member_ranges(raw: &[u8], max_members: usize) -> Result<Vec<Range<usize>>, Malformed> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let seed = Ranges {
        base: raw.as_ptr() as usize,
        max_members,
    };
    let ranges = seed.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    match ranges {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(TooMany)) => Err(Malformed {
            reason: MalformedReason::TooManyMembers,
            detail: format!("the array has more than max_array_members {max_members} members"),
        }),
        Err(e) => Err(Malformed {
            reason: MalformedReason::NotJson,
            detail: format!("not valid JSON: {e}"),
        }),
    }
}

/// More members than the limit: reported apart from syntax errors, which serde reports.
struct TooMany;

struct Ranges {
    base: usize,
    max_members: usize,
}

impl<'de> DeserializeSeed<'de> for Ranges {
    type Value = Result<Vec<Range<usize>>, TooMany>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Ranges {
    type Value = Result<Vec<Range<usize>>, TooMany>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ranges = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(64));
        while let Some(member) = seq.next_element::<&'de RawValue>()? {
            if ranges.len() == self.max_members {
                // Stop reading: the rest of the record may be huge.
                return Ok(Err(TooMany));
            }
            let text = member.get();
            let start = text.as_ptr() as usize - self.base;
            ranges.push(start..start + text.len());
        }
        Ok(Ok(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::origin;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_members: 4,
    };

    fn parse_str(json: &str) -> Result<Record, Malformed> {
        parse(Bytes::from(json.to_owned()), None, origin(7), LIMITS)
    }

    fn members(json: &str) -> Vec<Member> {
        match parse_str(json).unwrap() {
            Record::Array(m) => m,
            Record::One(e) => panic!("not an array: {e:?}"),
        }
    }

    const A: &str = r#"{"event":{"type":"a","timestamp":1},"customer_code":"x"}"#;
    const B: &str = r#"{"event":{"type":"b","timestamp":2}}"#;

    #[test]
    fn an_object_is_one_event_with_no_member_index() {
        let Record::One(e) = parse_str(A).unwrap() else {
            panic!("an object is one event")
        };
        assert_eq!(e.origin().member, None);
        assert_eq!(e.raw().as_ref(), A.as_bytes());
    }

    #[test]
    fn each_member_is_an_event_of_its_own_bytes_and_index() {
        let m = members(&format!(" [ {A} ,\n{B} ]\n"));
        assert_eq!(m.len(), 2);
        let (a, b) = (m[0].as_ref().unwrap(), m[1].as_ref().unwrap());
        assert_eq!(
            a.raw().as_ref(),
            A.as_bytes(),
            "the member's bytes, no more"
        );
        assert_eq!(b.raw().as_ref(), B.as_bytes());
        assert_eq!((a.event_type(), b.event_type()), (Some("a"), Some("b")));
        assert_eq!(a.customer_code(), Some("x"));
        assert_eq!((a.origin().member, b.origin().member), (Some(0), Some(1)));
        assert_eq!(a.origin().offset, 7, "the record's offset");
    }

    #[test]
    fn a_bad_member_is_refused_alone_with_its_index_and_bytes() {
        let m = members(&format!(r#"[{A}, [{B}], {{"event":{{}}}}, {B}]"#));
        assert_eq!(m.len(), 4);
        assert!(m[0].is_ok() && m[3].is_ok());
        let nested = m[1].as_ref().unwrap_err();
        assert_eq!(nested.malformed.reason, MalformedReason::NotObject);
        assert_eq!(
            nested.malformed.detail,
            "array member 1 is a JSON array, not an event object (arrays of events do not nest)"
        );
        assert_eq!(nested.raw.as_ref(), format!("[{B}]").as_bytes());
        assert_eq!(nested.origin.member, Some(1));
        let no_ts = m[2].as_ref().unwrap_err();
        assert_eq!(no_ts.malformed.reason, MalformedReason::MissingTimestamp);
        assert_eq!(no_ts.origin.member, Some(2));
        let scalar = members("[5]");
        assert_eq!(
            scalar[0].as_ref().unwrap_err().malformed.reason,
            MalformedReason::NotObject
        );
    }

    #[test]
    fn an_empty_array_holds_no_events() {
        assert!(members("[]").is_empty());
        assert!(members(" [ ] ").is_empty());
    }

    #[test]
    fn a_broken_array_is_malformed_whole() {
        for json in [
            format!("[{A},"),
            format!("[{A}] x"),
            format!("[{A} {B}]"),
            "[{\"event\": nope}]".to_string(),
        ] {
            let bad = parse_str(&json).unwrap_err();
            assert_eq!(bad.reason, MalformedReason::NotJson, "{json}");
        }
    }

    #[test]
    fn the_member_and_byte_limits_hold_for_the_whole_record() {
        let five = format!("[{}]", [B; 5].join(","));
        assert_eq!(
            parse_str(&five).unwrap_err().reason,
            MalformedReason::TooManyMembers
        );
        let four = format!("[{}]", [B; 4].join(","));
        assert_eq!(members(&four).len(), 4);
        let small = Limits {
            max_bytes: four.len() - 1,
            ..LIMITS
        };
        let bad = parse(Bytes::from(four), None, origin(0), small).unwrap_err();
        assert_eq!(bad.reason, MalformedReason::Oversize);
    }
}
