//! The switchyard daemon as a library: settings, the pipeline that wires the core, the Kafka
//! source and the destinations together, and the embedded demo. `main.rs` is only the CLI.

pub mod admin;
#[cfg(feature = "demo")]
pub mod demo;
pub mod destinations;
pub mod pipeline;
pub mod progress;
pub mod reload;
pub mod replay;
pub mod settings;
pub mod tenancy;

pub use pipeline::{Monitor, Pipeline, Progress};
pub use settings::Settings;
