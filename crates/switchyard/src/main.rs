//! `switchyard`: route QoE events from Kafka to observability destinations.

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use switchyard::settings::{Settings, env_lookup};
use switchyard::{Pipeline, progress};
use tracing_subscriber::EnvFilter;

// glibc's per-thread arenas held ~100 MiB more at peak for the same heap (make bench);
// docs/performance.md has the measurements.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Routes streaming-video QoE events from Kafka to Splunk HEC and other destinations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    #[arg(
        long,
        short,
        default_value = "connectors.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: String,
}

#[derive(Subcommand)]
enum Command {
    /// Consume from the configured Kafka cluster and deliver until SIGTERM/SIGINT.
    Run(ConfigArg),
    /// Check a configuration file; lists every problem and exits 2 if there are any
    /// (warnings are printed too, but alone they still exit 0).
    Validate(ConfigArg),
    /// List each customer's resolved destination instances (docs/tenancy.md), secrets
    /// redacted; exits 2 if the configuration or a tenant file is invalid.
    Tenants(ConfigArg),
    /// Deliver one connector's dead-lettered events again (after fixing the cause), then stop.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The connector whose letters to replay.
        #[arg(long)]
        connector: String,
        /// Give up if not caught up by then.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Run the config against an embedded broker, generated events and local stand-ins.
    #[cfg(feature = "demo")]
    Demo {
        #[arg(long, short, default_value = "connectors.toml")]
        config: String,
        /// Kafka records per second to generate; one in 20 is an array of 10 events.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// Take one stand-in down for a while, to watch its destination detach, drain and flow
        /// again: CONNECTOR:START_SECS:SECONDS, e.g. dz-connector-datadog:10:60.
        #[arg(long)]
        outage: Option<switchyard::demo::Outage>,
    },
}

fn init_logging() {
    let filter =
        EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let plain = match std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() {
        Ok("json") => false,
        Ok("plain") => true,
        // JSON for log collectors (containers), plain for people at a terminal.
        _ => std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if plain {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Validate(a) => validate(&a.config),
        Command::Tenants(a) => tenants(&a.config),
        Command::Run(a) => run(&a.config).await,
        Command::Replay {
            config,
            connector,
            timeout_secs,
        } => replay(&config.config, &connector, timeout_secs).await,
        #[cfg(feature = "demo")]
        Command::Demo {
            config,
            rate,
            partitions,
            duration_secs,
            outage,
        } => {
            let opts = switchyard::demo::DemoOptions {
                rate,
                partitions,
                malformed_every: 10_000,
                array_every: 20,
                outage,
            };
            let stop = async move {
                match duration_secs {
                    Some(s) => {
                        tokio::select! { _ = shutdown_signal() => {}, _ = tokio::time::sleep(Duration::from_secs(s)) => {} }
                    }
                    None => shutdown_signal().await,
                }
            };
            match switchyard::demo::run(&config, opts, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(path: &str) -> ExitCode {
    match Settings::load(path, &env_lookup) {
        Ok(s) => {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            let enabled: Vec<&str> = s
                .connectors
                .iter()
                .filter(|c| c.enabled)
                .map(|c| c.id.as_str())
                .collect();
            println!(
                "{path}: ok ({} connector(s), enabled: {})",
                s.connectors.len(),
                enabled.join(", ")
            );
            for c in &s.connectors {
                let l = c.engine.limits;
                println!(
                    "  {}: {}{}, batches of up to {} events, {} bytes, {} ms",
                    c.id,
                    c.kind.kind(),
                    if c.enabled { "" } else { " (disabled)" },
                    l.max_events,
                    l.max_bytes,
                    l.max_linger.as_millis()
                );
                for note in c.kind.notes() {
                    println!("    {note}");
                }
                if let Some(sample) = &c.filter.sample {
                    println!(
                        "    samples {}% of sessions by {}",
                        sample.rate() * 100.0,
                        sample.key()
                    );
                }
                if let Some(fields) = &c.engine.fields {
                    println!("    sends selected fields: {fields}");
                }
            }
            if let Some(dir) = &s.tenants.directory {
                println!(
                    "  tenants: {} in {} (customers without a file: {:?})",
                    s.tenants.by_customer.len(),
                    dir.display(),
                    s.tenants.unknown
                );
            }
            println!("note: {}", s.parking.note());
            ExitCode::SUCCESS
        }
        Err(invalid) => {
            eprint!("{path}: {invalid}");
            ExitCode::from(2)
        }
    }
}

/// Every tenant's instances: which connector, of which kind, with which settings (their
/// `Debug`, in which every credential shows as `<redacted>`).
fn tenants(path: &str) -> ExitCode {
    let s = match Settings::load(path, &env_lookup) {
        Ok(s) => s,
        Err(invalid) => {
            eprint!("{path}: {invalid}");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = &s.tenants.directory else {
        println!(
            "{path}: no [tenants] directory: every customer's events go to the connectors of this file"
        );
        return ExitCode::SUCCESS;
    };
    println!(
        "{} tenant(s) in {}; a customer without a file: {:?}",
        s.tenants.by_customer.len(),
        dir.display(),
        s.tenants.unknown
    );
    for (code, tenant) in &s.tenants.by_customer {
        println!("{code} ({}):", tenant.file.display());
        for c in &tenant.connectors {
            let state = if c.enabled { "" } else { " (disabled)" };
            println!("  {}: {}{state} {:?}", c.id, c.kind.kind(), c.kind);
        }
    }
    ExitCode::SUCCESS
}

async fn replay(path: &str, connector: &str, timeout_secs: u64) -> ExitCode {
    let settings = match Settings::load(path, &env_lookup) {
        Ok(s) => s,
        Err(invalid) => {
            eprint!("{path}: {invalid}");
            return ExitCode::from(2);
        }
    };
    log_warnings(&settings);
    // Replay runs the connector even if it is disabled, and a disabled one may have loaded
    // without its variables: sending without them would refuse, and so lose, every letter.
    if let Some(c) = settings.connectors.iter().find(|c| c.id == connector)
        && let Err(invalid) = c.runnable()
    {
        eprint!("{path}: {invalid}");
        return ExitCode::from(2);
    }
    match switchyard::replay::run(&settings, connector, Duration::from_secs(timeout_secs)).await {
        Ok(r) => {
            println!(
                "replayed to {connector}: {} delivered, {} refused again (see logs)",
                r.delivered, r.refused_again
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("replay failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: &str) -> ExitCode {
    let settings = match Settings::load(path, &env_lookup) {
        Ok(s) => s,
        Err(invalid) => {
            eprint!("{path}: {invalid}");
            return ExitCode::from(2);
        }
    };
    log_warnings(&settings);
    // Before the pipeline, so the first deliveries' timings are recorded.
    switchyard::admin::prometheus();
    let pipeline = match Pipeline::start(&settings).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            return ExitCode::FAILURE;
        }
    };
    if settings.admin.enabled
        && let Err(e) = switchyard::admin::serve(settings.admin.bind, pipeline.monitor()).await
    {
        tracing::error!(bind = %settings.admin.bind, error = %e, "admin server could not start");
        let _ = pipeline.shutdown().await;
        return ExitCode::FAILURE;
    }
    let config = std::path::Path::new(path);
    // Before saying it runs: a SIGHUP from then on reloads, and never ends the process.
    let reloads = switchyard::reload::Triggers::install(config, &pipeline);
    tracing::info!(topics = ?settings.kafka.topics, group = %settings.kafka.group_id, "switchyard running");
    let report = progress::report_until(
        &pipeline,
        Duration::from_secs(30),
        shutdown_signal(),
        |line| {
            tracing::info!(progress = %line, "progress");
        },
    );
    tokio::select! {
        _ = report => {}
        _ = reloads.serve(config, &env_lookup, &pipeline) => {}
    }
    tracing::info!("signal received; shutting down");
    let clean = pipeline.shutdown().await;
    tracing::info!(clean, "stopped");
    ExitCode::SUCCESS
}

fn log_warnings(settings: &Settings) {
    for w in &settings.warnings {
        tracing::warn!(key = %w.path, "{}", w.message);
    }
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
