//! Realistic QoE events derived from the sample event: varied types, customers, connector
//! lists and sizes, each with a unique `event_id` so tests can account for every one.

use serde_json::Value;

const SAMPLE: &str = include_str!("../data/sample-event.json");

const TYPES: [&str; 10] = [
    "playback_start",
    "heartbeat",
    "heartbeat",
    "heartbeat",
    "stall_start",
    "stall_end",
    "rendition_change",
    "pause",
    "resume",
    "webrtc_stats",
];

/// The customer codes generated events carry, each about as often.
pub const CUSTOMERS: [&str; 5] = ["486a1f", "77be02", "c0ffee", "d15ea5", "0ba5ed"];

pub struct Generator {
    template: Value,
    rng: fastrand::Rng,
    run: String,
    seq: u64,
    lists: Vec<String>,
    base_ts: u64,
}

/// Consecutive generated events of one session.
pub const EVENTS_PER_SESSION: u64 = 8;

impl Generator {
    /// Events named `<run>-<n>`; `seed` makes the sequence repeatable.
    pub fn new(run: &str, seed: u64) -> Self {
        Generator {
            template: serde_json::from_str(SAMPLE).expect("the sample event is JSON"),
            rng: fastrand::Rng::with_seed(seed),
            run: run.into(),
            seq: 0,
            lists: vec!["dz-connector-splunk".into()],
            // Now: Datadog indexes logs at most 18 h old, New Relic events within ±24 h.
            base_ts: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1_712_167_312_284, |d| d.as_millis() as u64),
        }
    }

    /// `connector_list` values to pick from (uniformly).
    pub fn connector_lists(mut self, lists: &[&str]) -> Self {
        self.lists = lists.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The sample event itself, unchanged.
    pub fn sample() -> &'static str {
        SAMPLE
    }

    /// The next event: its id and its JSON bytes.
    pub fn next_event(&mut self) -> (String, Vec<u8>) {
        let id = format!("{}-{}", self.run, self.seq);
        let mut e = self.template.clone();
        let kind = TYPES[self.rng.usize(..TYPES.len())];
        e["event_id"] = id.clone().into();
        e["event"]["type"] = kind.into();
        e["event"]["timestamp"] = (self.base_ts + self.seq * 17).into();
        e["customer_code"] = CUSTOMERS[self.rng.usize(..CUSTOMERS.len())].into();
        e["connector_list"] = self.lists[self.rng.usize(..self.lists.len())]
            .clone()
            .into();
        e["event"]["metrics"]["event_count"] = self.seq.into();
        // Consecutive events share a viewing session, as a player's do: what sampling keys on.
        e["user_details"]["content_session_id"] =
            format!("{}-session-{}", self.run, self.seq / EVENTS_PER_SESSION).into();
        if kind != "webrtc_stats" {
            // Only WebRTC stats carry the large `custom` block: sizes vary like real traffic.
            if let Some(o) = e.as_object_mut() {
                o.remove("custom");
                if kind == "heartbeat" {
                    o.remove("geo_location");
                }
            }
        }
        self.seq += 1;
        (id, serde_json::to_vec(&e).expect("a Value serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_vary_and_have_unique_ids() {
        let mut g = Generator::new("t", 1).connector_lists(&["a,b", "b"]);
        let events: Vec<_> = (0..200).map(|_| g.next_event()).collect();
        let ids: std::collections::HashSet<_> = events.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), 200, "every id distinct");
        let sizes: Vec<usize> = events.iter().map(|(_, b)| b.len()).collect();
        assert!(
            sizes.iter().any(|s| *s > 4000) && sizes.iter().any(|s| *s < 3300),
            "{sizes:?}"
        );
        let v: Value = serde_json::from_slice(&events[0].1).unwrap();
        assert_eq!(v["event_id"], "t-0");
        assert!(["a,b", "b"].contains(&v["connector_list"].as_str().unwrap()));
        let session = |i: usize| {
            let v: Value = serde_json::from_slice(&events[i].1).unwrap();
            v["user_details"]["content_session_id"].clone()
        };
        assert_eq!(session(0), session(EVENTS_PER_SESSION as usize - 1));
        assert_ne!(session(0), session(EVENTS_PER_SESSION as usize));
    }
}
