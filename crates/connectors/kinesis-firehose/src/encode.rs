//! Events to Firehose records: each event's bytes plus the delimiter, or with packing, as many
//! delimited events per record as fit in 1,024,000 bytes.

use crate::config::MAX_RECORD_BYTES;
use switchyard_core::{Event, Shipment};

/// One record's data and how many events (in order) it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct FirehoseRecord {
    pub data: Vec<u8>,
    pub events: usize,
}

/// The records of a request, and the events that could not be sent.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<FirehoseRecord>,
    pub rejected: Vec<(usize, String)>,
}

pub fn encoded_len(event: &Event, delimiter: &[u8]) -> usize {
    event.json().len() + delimiter.len()
}

pub fn encode(shipment: Shipment<'_>, delimiter: &[u8], packing: bool) -> Records {
    let mut out = Records::default();
    for (i, e) in shipment.events().iter().enumerate() {
        let len = shipment.event_json_len(e) + delimiter.len();
        if len > MAX_RECORD_BYTES {
            out.rejected.push((
                i,
                format!("oversize: a record of {len} bytes is over Firehose's limit of {MAX_RECORD_BYTES}"),
            ));
            continue;
        }
        let fits_last = packing
            && out
                .records
                .last()
                .is_some_and(|r| r.data.len() + len <= MAX_RECORD_BYTES);
        if !fits_last {
            out.records.push(FirehoseRecord {
                data: Vec::with_capacity(len),
                events: 0,
            });
        }
        if let Some(r) = out.records.last_mut() {
            shipment.write_event(e, &mut r.data);
            r.data.extend_from_slice(delimiter);
            r.events += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_testkit::event;

    #[test]
    fn one_event_per_record_newline_terminated() {
        let events = [
            event(r#"{"event":{"timestamp":1}} "#),
            event(r#"{"event":{"timestamp":2}}"#),
        ];
        let r = encode(Shipment::plain(&events), b"\n", false);
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[0].data, b"{\"event\":{\"timestamp\":1}}\n");
        assert!(r.records.iter().all(|r| r.events == 1));
    }

    #[test]
    fn packing_fills_records_up_to_the_limit() {
        let pad = "x".repeat(300_000);
        let events: Vec<_> = (0..7)
            .map(|i| event(&format!(r#"{{"event":{{"timestamp":{i}}},"p":"{pad}"}}"#)))
            .collect();
        let r = encode(Shipment::plain(&events), b"\n", true);
        assert_eq!(
            r.records.iter().map(|r| r.events).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        assert!(r.records.iter().all(|r| r.data.len() <= MAX_RECORD_BYTES));
        let lines: usize = r
            .records
            .iter()
            .map(|r| r.data.iter().filter(|b| **b == b'\n').count())
            .sum();
        assert_eq!(lines, 7);
    }

    #[test]
    fn each_record_carries_the_records_and_is_sized_with_them() {
        let records = Some(&br#"{"r":1}"#[..]);
        let small = [event(r#"{"event":{"timestamp":1}}"#)];
        let r = encode(Shipment::new(&small, records), b"\n", false);
        assert_eq!(
            r.records[0].data,
            b"{\"event\":{\"timestamp\":1},\"ops_metadata\":{\"collector_observability\":[{\"r\":1}]}}\n"
        );
        // Exactly the limit as it is, over it once its records are spliced in.
        let empty = r#"{"event":{"timestamp":1},"p":""}"#.len();
        let pad = "x".repeat(MAX_RECORD_BYTES - 1 - empty);
        let full = [event(&format!(
            r#"{{"event":{{"timestamp":1}},"p":"{pad}"}}"#
        ))];
        let r = encode(Shipment::plain(&full), b"\n", false);
        assert_eq!(
            (r.records.len(), r.records[0].data.len()),
            (1, MAX_RECORD_BYTES)
        );
        let r = encode(Shipment::new(&full, records), b"\n", false);
        assert!(r.records.is_empty());
        assert!(r.rejected[0].1.starts_with("oversize"));
    }

    #[test]
    fn an_event_over_the_record_limit_is_rejected_not_sent() {
        let big = event(&format!(
            r#"{{"event":{{"timestamp":1}},"p":"{}"}}"#,
            "x".repeat(MAX_RECORD_BYTES)
        ));
        let small = event(r#"{"event":{"timestamp":2}}"#);
        let r = encode(Shipment::plain(&[small.clone(), big, small]), b"\n", false);
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].0, 1);
        assert!(r.rejected[0].1.starts_with("oversize"));
    }
}
