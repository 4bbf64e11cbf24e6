//! What a billion events cost: the scenario's measured CPU and bytes times a price table
//! (`prices.toml` beside this file, or the file `SWITCHYARD_BENCH_PRICES` names).

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Firehose connector's kind: its ingestion is priced by `firehose_ingest_per_gb`.
pub const FIREHOSE: &str = "kinesis_firehose";

/// Dollars, per GB (10^9 bytes) or per vCPU-hour.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub egress_per_gb: f64,
    pub vcpu_hour: f64,
    pub firehose_ingest_per_gb: f64,
    /// By connector kind (`datadog_logs`, …): what that destination charges per ingested GB.
    #[serde(default)]
    pub ingest_per_gb: BTreeMap<String, f64>,
    #[serde(skip)]
    pub source: PathBuf,
}

impl Prices {
    /// The table `SWITCHYARD_BENCH_PRICES` names, or the default beside this file.
    pub fn load() -> Result<Prices, String> {
        let path = std::env::var_os("SWITCHYARD_BENCH_PRICES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e/prices.toml")
            });
        Prices::read(&path).map_err(|e| format!("price table {}: {e}", path.display()))
    }

    fn read(path: &Path) -> Result<Prices, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut prices: Prices = toml::from_str(&text).map_err(|e| e.to_string())?;
        let fixed = [
            ("egress_per_gb", prices.egress_per_gb),
            ("vcpu_hour", prices.vcpu_hour),
            ("firehose_ingest_per_gb", prices.firehose_ingest_per_gb),
        ];
        let by_kind = prices.ingest_per_gb.iter().map(|(k, v)| (k.as_str(), *v));
        for (key, price) in fixed.into_iter().chain(by_kind) {
            if !price.is_finite() || price < 0.0 {
                return Err(format!(
                    "{key} = {price}: a price is a number of dollars, 0 or more"
                ));
            }
        }
        if prices.ingest_per_gb.contains_key(FIREHOSE) {
            return Err(format!(
                "ingest_per_gb.{FIREHOSE}: Firehose's ingestion is firehose_ingest_per_gb"
            ));
        }
        prices.source = path.to_path_buf();
        Ok(prices)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source.display().to_string(),
            "egress_per_gb": self.egress_per_gb,
            "vcpu_hour": self.vcpu_hour,
            "firehose_ingest_per_gb": self.firehose_ingest_per_gb,
            "ingest_per_gb": self.ingest_per_gb,
        })
    }
}

/// One destination's bytes over a scenario (every accepted request, retries included).
pub struct Bytes {
    pub id: String,
    pub kind: &'static str,
    /// Request bodies as sent.
    pub wire: u64,
    /// What the destination ingests: bodies decoded; for Firehose, the records' data.
    pub ingested: u64,
    /// What it bills by volume: `ingested`, or for Firehose its records rounded up to 5 KB.
    pub billed: u64,
}

/// The cost of a scenario per billion events routed: `events` in, the router's
/// `cpu_per_million` CPU-seconds per million of them, `bytes` per destination.
pub fn report(prices: &Prices, events: u64, cpu_per_million: f64, bytes: &[Bytes]) -> Value {
    let per_event = |b: u64| b as f64 / events.max(1) as f64;
    // Bytes per event times a price per GB (10^9 bytes) is dollars per 10^9 events.
    let cpu = cpu_per_million * 1000.0 / 3600.0 * prices.vcpu_hour;
    let (mut egress, mut firehose, mut ingest) = (0.0, 0.0, 0.0);
    let mut destinations = serde_json::Map::new();
    for b in bytes {
        let wire_dollars = per_event(b.wire) * prices.egress_per_gb;
        let (firehose_dollars, ingest_dollars) = if b.kind == FIREHOSE {
            (
                Some(per_event(b.billed) * prices.firehose_ingest_per_gb),
                None,
            )
        } else {
            let price = prices.ingest_per_gb.get(b.kind);
            (None, price.map(|p| per_event(b.billed) * p))
        };
        egress += wire_dollars;
        firehose += firehose_dollars.unwrap_or(0.0);
        ingest += ingest_dollars.unwrap_or(0.0);
        destinations.insert(
            b.id.clone(),
            json!({
                "kind": b.kind,
                "wire_bytes_per_event": per_event(b.wire),
                "ingested_bytes_per_event": per_event(b.ingested),
                "billed_bytes_per_event": per_event(b.billed),
                "egress_dollars_per_billion_events": wire_dollars,
                "firehose_dollars_per_billion_events": firehose_dollars,
                // null: no price for this kind in the table.
                "ingest_dollars_per_billion_events": ingest_dollars,
            }),
        );
    }
    json!({
        "events": events,
        "router_cpu_seconds_per_million_events": cpu_per_million,
        "dollars_per_billion_events": {
            "cpu": cpu,
            "egress": egress,
            "firehose_ingestion": firehose,
            "destination_ingest": ingest,
            "total": cpu + egress + firehose + ingest,
        },
        "destinations": destinations,
    })
}
