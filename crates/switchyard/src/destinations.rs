//! The destination kinds this build knows: the one list to extend when adding one (README,
//! "Adding a destination"). Settings, the pipeline, the demo, `validate` and the benches all
//! go through it.

use switchyard_destination::Descriptor;

pub const DESTINATIONS: &[Descriptor] = &[
    switchyard_splunk_hec::DESCRIPTOR,
    switchyard_datadog_logs::DESCRIPTOR,
    switchyard_newrelic_events::DESCRIPTOR,
    switchyard_kinesis_firehose::DESCRIPTOR,
    switchyard_otlp_logs::DESCRIPTOR,
];

/// The kind called `name`.
pub fn find(name: &str) -> Option<&'static Descriptor> {
    DESTINATIONS.iter().find(|d| d.kind == name)
}

/// Every kind's name, for messages.
pub fn names() -> String {
    DESTINATIONS
        .iter()
        .map(|d| d.kind)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique() {
        let mut kinds: Vec<&str> = DESTINATIONS.iter().map(|d| d.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), DESTINATIONS.len());
    }
}
