//! What a connector encodes: the events of one request and, when the connector appends them,
//! the router's latest `collector_observability` records to write into each.
//!
//! The records, and what splicing them adds to an event, are the engine's business: a
//! connector only asks for an event's JSON and its length, so that every destination writes
//! the same records the same way and sizes its requests with the same, exact, numbers.

use crate::event::Event;
use crate::fields::Shaped;

/// The events of one request and the records to splice into each of them.
#[derive(Debug, Clone, Copy)]
pub struct Shipment<'a> {
    events: &'a [Event],
    /// Never empty: no records and an empty list write the same bytes.
    records: Option<&'a [u8]>,
    /// The connector's field selection's documents, records included; None: the raw events.
    shaped: Option<&'a Shaped>,
}

impl<'a> Shipment<'a> {
    /// `records`: comma-separated JSON objects, no brackets (the engine's serialized
    /// `collector_observability` records), or None.
    pub fn new(events: &'a [Event], records: Option<&'a [u8]>) -> Self {
        Shipment {
            events,
            records: records.filter(|r| !r.is_empty()),
            shaped: None,
        }
    }

    /// `events` as a connector's field selection shaped them (see [`Shaped::build`]), the
    /// records already in each.
    pub fn shaped(events: &'a [Event], shaped: &'a Shaped) -> Self {
        Shipment {
            events,
            records: None,
            shaped: Some(shaped),
        }
    }

    /// `events` sent as they are.
    pub fn plain(events: &'a [Event]) -> Self {
        Shipment::new(events, None)
    }

    /// The events, in request order; encoders' indexes (rejections, fixes) refer to these.
    pub fn events(&self) -> &'a [Event] {
        self.events
    }

    /// Appends `event`'s JSON, with the records in its `ops_metadata.collector_observability`.
    pub fn write_event(&self, event: &Event, out: &mut Vec<u8>) {
        match self.shaped_json(event) {
            Some(json) => out.extend_from_slice(&json),
            None => event.write_json(out, self.records),
        }
    }

    /// The exact number of bytes [`Shipment::write_event`] appends for `event`.
    pub fn event_json_len(&self, event: &Event) -> usize {
        match self.shaped_json(event) {
            Some(json) => json.len(),
            None => event.json_len(self.records),
        }
    }

    /// The shaped document of `event`, when the connector selects fields. `event` is one of
    /// [`Shipment::events`], found by its place in the slice; any other is shaped anew, so
    /// that no encoder can send an event unshaped (an excluded field may be one that must
    /// not leave).
    fn shaped_json(&self, event: &Event) -> Option<std::borrow::Cow<'a, [u8]>> {
        let shaped = self.shaped?;
        let size = std::mem::size_of::<Event>();
        let offset = (event as *const Event as usize).wrapping_sub(self.events.as_ptr() as usize);
        // A stray reference's offset may land anywhere: only an exact match is ours.
        let ours = self
            .events
            .get(offset / size)
            .is_some_and(|e| std::ptr::eq(e, event));
        match ours.then(|| shaped.get(offset / size)).flatten() {
            Some(json) => Some(std::borrow::Cow::Borrowed(json)),
            None => Some(std::borrow::Cow::Owned(
                shaped.shape(event).unwrap_or_else(|| b"{}".to_vec()),
            )),
        }
    }

    /// `event`'s JSON with the records: borrowed from the event when there are none (no
    /// copy), else written into `scratch`, which is cleared first. For encoders that read the
    /// JSON rather than copy it.
    pub fn event_json<'s>(&self, event: &'s Event, scratch: &'s mut Vec<u8>) -> &'s [u8]
    where
        'a: 's,
    {
        if let Some(json) = self.shaped_json(event) {
            return match json {
                std::borrow::Cow::Borrowed(json) => json,
                std::borrow::Cow::Owned(json) => {
                    *scratch = json;
                    scratch
                }
            };
        }
        if self.records.is_none() {
            return event.json();
        }
        scratch.clear();
        self.write_event(event, scratch);
        scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::event;

    const RECORDS: &[u8] = br#"{"r":1}"#;

    #[test]
    fn records_are_spliced_into_each_event_and_measured_exactly() {
        let events = [
            event("{\"event\":{\"timestamp\":1}}\n"),
            event(
                r#"{"event":{"timestamp":2},"ops_metadata":{"collector_observability":[{"x":0}]}}"#,
            ),
        ];
        let shipment = Shipment::new(&events, Some(RECORDS));
        assert_eq!(shipment.events().len(), 2);
        let mut out = Vec::new();
        shipment.write_event(&events[0], &mut out);
        assert_eq!(
            out,
            br#"{"event":{"timestamp":1},"ops_metadata":{"collector_observability":[{"r":1}]}}"#
        );
        assert_eq!(shipment.event_json_len(&events[0]), out.len());
        let mut scratch = Vec::new();
        let second = shipment.event_json(&events[1], &mut scratch);
        assert_eq!(
            second,
            br#"{"event":{"timestamp":2},"ops_metadata":{"collector_observability":[{"x":0},{"r":1}]}}"#
        );
        assert_eq!(shipment.event_json_len(&events[1]), second.len());
    }

    #[test]
    fn without_records_events_go_as_they_are() {
        let events = [event("{\"event\":{\"timestamp\":1}} \n")];
        for shipment in [Shipment::plain(&events), Shipment::new(&events, Some(b""))] {
            let mut out = Vec::new();
            shipment.write_event(&events[0], &mut out);
            assert_eq!(out, events[0].json());
            assert_eq!(shipment.event_json_len(&events[0]), events[0].json().len());
            let mut scratch = Vec::new();
            let json = shipment.event_json(&events[0], &mut scratch);
            assert_eq!(
                json.as_ptr(),
                events[0].json().as_ptr(),
                "borrowed, not copied"
            );
        }
    }
}
