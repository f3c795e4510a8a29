//! `dify-bench`: the benchmark harness for dify-bff (see bench/README.md).
//!
//! `bench/run.sh` builds everything and runs `dify-bench suite`, which starts the fast
//! upstream, dify-bff and nginx on loopback and runs every scenario. The other subcommands
//! are the pieces, for running one by hand.

mod json;
mod procstat;
mod sse;
mod stats;
mod suite;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hyper::header::{HeaderName, HeaderValue};

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(Parser)]
#[command(about = "Benchmark harness for dify-bff against a direct connection and nginx")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario (what bench/run.sh does after building).
    Suite(Box<suite::Options>),
    /// The fast upstream: fixed 2 KB conversation list, timestamped SSE at a requested cadence.
    Upstream {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: SocketAddr,
        #[arg(long, default_value = suite::API_KEY)]
        key: String,
    },
    /// dify-bff's own Dify emulator (release build), for relaying real Dify bytes by hand.
    Emulator {
        #[arg(long, default_value = suite::API_KEY)]
        key: String,
        /// Gap between answer pieces.
        #[arg(long, default_value_t = 20)]
        token_interval_ms: u64,
        /// `event: ping` cadence.
        #[arg(long, default_value_t = 10_000)]
        ping_interval_ms: u64,
    },
    /// SSE streams against one target; prints time to first event and per-event delay.
    Sse {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/chat")]
        path: String,
        /// Extra request header, `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        #[arg(long, default_value_t = 40)]
        events: u64,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        #[arg(long, default_value_t = 16)]
        answer_bytes: usize,
        #[arg(long, default_value_t = 1000)]
        ramp_ms: u64,
    },
    /// Closed-loop keep-alive GET load (the fallback when oha is not installed).
    Json {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/conversations")]
        path: String,
        #[arg(long = "header")]
        headers: Vec<String>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Stop after exactly this many requests (all connections together) instead of after
        /// `--seconds`: a fixed amount of work, for counting instructions per request.
        #[arg(long)]
        requests: Option<u64>,
    },
}

pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?} is not `Name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?,
        HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?,
    ))
}

fn parse_headers(texts: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    texts.iter().map(|t| parse_header(t)).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dify-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dify-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Suite(options) => suite::run(*options).await,
        Command::Upstream { listen, key } => upstream::serve(listen, key)
            .await
            .map_err(|e| format!("upstream: {e}")),
        Command::Emulator {
            key,
            token_interval_ms,
            ping_interval_ms,
        } => {
            let emulator = dify_emulator::Emulator::start(dify_emulator::EmulatorOptions {
                api_key: key,
                token_interval: Duration::from_millis(token_interval_ms),
                ping_interval: Duration::from_millis(ping_interval_ms),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("emulator: {e}"))?;
            println!("{}", emulator.base_url());
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
        Command::Sse {
            addr,
            path,
            headers,
            streams,
            repeat,
            events,
            interval_ms,
            answer_bytes,
            ramp_ms,
        } => {
            let target = Arc::new(sse::Target {
                addr,
                path,
                headers: parse_headers(&headers)?,
            });
            let load = sse::Load {
                streams,
                repeat,
                events,
                interval: Duration::from_millis(interval_ms),
                answer_bytes,
                ramp: Duration::from_millis(ramp_ms),
            };
            let outcome = sse::run(target, load, Arc::default()).await;
            suite::print_sse_outcome(&outcome);
            Ok(())
        }
        Command::Json {
            addr,
            path,
            headers,
            connections,
            seconds,
            requests,
        } => {
            let target = Arc::new(json::Target {
                addr,
                path_and_query: path,
                headers: parse_headers(&headers)?,
            });
            let o = match requests {
                Some(n) => json::run_count(target, connections, n).await,
                None => json::run(target, connections, Duration::from_secs(seconds)).await,
            };
            println!(
                "{} requests, {:.0} requests/s, p50 {} ms, p99 {} ms, {} errors{}",
                o.requests,
                o.rps(),
                stats::ms(o.latency.p50),
                stats::ms(o.latency.p99),
                o.errors,
                o.first_error
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// Where bench/ is, for the nginx template and result files.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
