//! The `dify-bff` binary: flags, configuration, telemetry, serve. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dify_bff::config::Config;
#[cfg(feature = "demo")]
use dify_bff::config::DEMO_API_KEY;
use dify_bff::telemetry::logging;
#[cfg(feature = "demo")]
use dify_emulator::{Emulator, EmulatorOptions};
use tokio::net::TcpListener;

/// A backend-for-frontend for Dify chat apps: holds the Dify API key, gives each browser its
/// own identity, relays Dify's streams byte for byte and serves a chat page.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Run against a built-in Dify emulator: no key or Dify needed.
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when the server on HOST/PORT answers /healthz, else 1 (for container probes).
    Healthcheck,
}

fn main() -> ExitCode {
    let code = match runtime() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("dify-bff: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    };
    dify_bff::telemetry::log_sink::flush();
    code
}

/// The main thread's runtime: it accepts connections and serves its share of them; the other
/// workers (`WORKER_THREADS`) are threads with runtimes of their own (`server::workers`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn run() -> ExitCode {
    let matches = Cli::command()
        .after_help(dify_bff::config::vars::help())
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.demo && !cfg!(feature = "demo") {
        eprintln!(
            "dify-bff: this build has no demo: build with the default `demo` feature (cargo run -- --demo)"
        );
        return ExitCode::from(2);
    }
    let _ = dotenvy::dotenv();
    let healthcheck_only = matches!(cli.command, Some(Command::Healthcheck));
    let config = match Config::from_env(cli.demo || healthcheck_only) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dify-bff: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck(&config).await;
    }
    let mut config = config;
    config.check_dify_at_start = true;
    logging::init(config.log_format);
    dify_bff::server::open_files::raise_open_files();

    #[cfg(feature = "demo")]
    let _emulator = if cli.demo {
        match start_demo(&mut config).await {
            Ok(emulators) => Some(emulators),
            Err(e) => {
                tracing::error!(error = %e, "could not start the demo emulator");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };

    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dify-bff: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(2);
        }
    };
    let metrics_listener = match config.metrics_addr {
        Some(metrics_addr) => match TcpListener::bind(metrics_addr).await {
            Ok(metrics_listener) => Some(metrics_listener),
            Err(e) => {
                eprintln!("dify-bff: METRICS_ADDR: cannot listen on {metrics_addr}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    for app in &config.apps.apps {
        let path = if config.apps.named {
            format!("/apps/{}/", app.name)
        } else {
            "/".to_owned()
        };
        tracing::info!(app = %app.name, upstream = %dify_bff::config::redacted(&app.base_url), path = %path, "serving a Dify app");
    }
    tracing::info!("dify-bff listening on http://{addr}");
    if cli.demo {
        tracing::info!("demo mode: open http://{addr}/ in your browser");
    }
    match dify_bff::serve_on(listener, metrics_listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}

/// The demo serves two emulated apps, so the app picker shows: a plain chat, and a helper with
/// an input form, its own opening statement and image uploads.
#[cfg(feature = "demo")]
async fn start_demo(config: &mut Config) -> std::io::Result<Vec<Emulator>> {
    use dify_bff::config::{AppConfig, AppsConfig};
    use dify_emulator::AppInfo;
    use serde_json::json;

    let chat = EmulatorOptions {
        api_key: DEMO_API_KEY.to_owned(),
        info: Some(AppInfo {
            name: "Demo chat".to_owned(),
            description: "A plain chat that shows every feature: uploads, follow-up questions, Markdown, sources, a long answer, a failure.".to_owned(),
            mode: "chat".to_owned(),
        }),
        ..EmulatorOptions::demo_app()
    };
    let helper = EmulatorOptions {
        api_key: DEMO_HELPER_KEY.to_owned(),
        demo: true,
        opening_statement: Some(
            "Hi! I am the helper app of the demo: tell me your name and what to help with."
                .to_owned(),
        ),
        user_input_form: json!([{"text-input": {
            "label": "Your name", "variable": "name", "required": false, "max_length": 48, "default": "",
        }}]),
        file_upload: json!({"image": {
            "enabled": true, "number_limits": 3, "detail": "high",
            "transfer_methods": ["local_file", "remote_url"],
        }}),
        info: Some(AppInfo {
            name: "Demo helper".to_owned(),
            description: "A chatflow with an input form and image uploads.".to_owned(),
            mode: "advanced-chat".to_owned(),
        }),
        ..EmulatorOptions::default()
    };
    let mut emulators = Vec::new();
    let mut apps = Vec::new();
    for (name, key, options) in [
        ("chat", DEMO_API_KEY, chat),
        ("helper", DEMO_HELPER_KEY, helper),
    ] {
        let emulator = Emulator::start(options).await?;
        let base_url = reqwest::Url::parse(&format!("{}/", emulator.base_url()))
            .map_err(std::io::Error::other)?;
        tracing::info!(app = name, emulator = %emulator.base_url(), "demo: a built-in Dify emulator");
        apps.push(AppConfig {
            name: name.to_owned(),
            api_key: key.to_owned().into(),
            base_url,
        });
        emulators.push(emulator);
    }
    config.apps = AppsConfig { apps, named: true };
    Ok(emulators)
}

/// The demo helper app's key (the emulator accepts it; it guards nothing).
#[cfg(feature = "demo")]
const DEMO_HELPER_KEY: &str = "app-demohelper000000000000000";

async fn healthcheck(config: &Config) -> ExitCode {
    let host = if config.listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        config.listen.ip().to_string()
    };
    let url = format!(
        "http://{}/healthz",
        std::net::SocketAddr::new(
            host.parse()
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
            config.listen.port(),
        )
    );
    let client = reqwest::Client::new();
    let ok = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(&url).send())
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|r| r.status().is_success());
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("dify-bff healthcheck: {url} did not answer 200");
        ExitCode::from(1)
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
