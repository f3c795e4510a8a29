//! Typed, validated configuration read from the environment (API.md §1).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum_extra::extract::cookie::SameSite;
use http::HeaderName;
use ipnet::IpNet;
use reqwest::Url;
use secrecy::SecretString;

pub use self::apps::{AppConfig, AppsConfig, DEFAULT_APP, is_app_name};
pub use self::embed::EmbedOrigins;
pub use self::parse::redacted;
use self::parse::{
    invalid, list, parse_base_url, parse_cidr, parse_host, parse_or, parse_origin, parse_port,
    parse_same_site, secs,
};

pub mod apps;
mod embed;
mod parse;
mod shared;

pub use self::shared::{SharedConfig, redis_client};
pub mod vars;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The apps served (API.md §5): the one of `DIFY_API_KEY`, or named ones.
    pub apps: AppsConfig,
    /// `DIFY_BASE_URL`: the base of every app that names none of its own.
    pub dify_base_url: Url,
    pub listen: SocketAddr,
    pub cookie_same_site: SameSite,
    /// `None` means a random per-process secret.
    pub session_secret: Option<SecretString>,
    pub user_header: Option<HeaderName>,
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_origins: Vec<String>,
    /// `EMBED_ORIGINS`: the sites that may frame the page (API.md §8).
    pub embed: EmbedOrigins,
    pub max_body_bytes: usize,
    pub max_upload_bytes: u64,
    pub rate_limit_per_minute: u32,
    pub max_streams_per_identity: usize,
    pub max_concurrent_streams: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// A request's head must arrive within this (also how long an idle keep-alive connection
    /// is kept); slow or silent clients are disconnected.
    pub request_header_timeout: Duration,
    /// The longest gap between two pieces of a request body before the request fails with 408.
    pub request_body_timeout: Duration,
    /// The longest a whole request body may take to arrive, however steadily it trickles (408).
    pub request_body_deadline: Duration,
    /// Request body bytes held in memory by all requests together; more waits for none: 503.
    pub max_buffered_body_bytes: usize,
    /// Open connections per peer address (`0`: no limit); peers in `TRUSTED_PROXIES` are exempt.
    pub max_connections_per_peer: usize,
    /// Non-streaming Dify calls in flight at once, their answers included; more is 503.
    pub max_concurrent_upstream_calls: usize,
    /// Runtimes serving connections, one thread each (`WORKER_THREADS`; default: one per CPU
    /// the process may use).
    pub worker_threads: usize,
    pub metrics_addr: Option<SocketAddr>,
    pub static_dir: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Redis, token budgets and resumable streams (API.md §7).
    pub shared: SharedConfig,
    /// Check Dify (`GET /info`) at start-up, log what is wrong and retry until it answers. Not
    /// from the environment: the binary turns it on; tests and embedders choose.
    pub check_dify_at_start: bool,
}

/// A configuration problem: the variable and what is wrong with it. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.var, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Placeholder key used when `--demo` runs without a real one; the emulator accepts it.
pub const DEMO_API_KEY: &str = "app-demo00000000000000000000";

impl Config {
    /// Reads the process environment (after `.env` has been loaded by the caller).
    pub fn from_env(demo: bool) -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), demo)
    }

    /// Builds the configuration from any variable lookup, so tests need not touch the process
    /// environment. Empty values count as unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        demo: bool,
    ) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let dify_base_url = parse_base_url(
            get("DIFY_BASE_URL")
                .as_deref()
                .unwrap_or("https://api.dify.ai/v1"),
        )?;
        let apps = apps::parse(&get, &dify_base_url, demo, DEMO_API_KEY)?;
        let host = parse_host(get("HOST"))?;
        let port = parse_port(get("PORT"))?;
        let session_secret = match get("SESSION_SECRET") {
            Some(s) if s.len() < 32 => {
                return Err(invalid("SESSION_SECRET", "must be at least 32 bytes long"));
            }
            Some(s) => Some(SecretString::from(s)),
            None => None,
        };
        let user_header = get("USER_HEADER")
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| invalid("USER_HEADER", "is not a valid header name"))
            })
            .transpose()?;
        let trusted_proxies = list(get("TRUSTED_PROXIES"))
            .map(|entry| parse_cidr(&entry))
            .collect::<Result<Vec<_>, _>>()?;
        if user_header.is_some() && trusted_proxies.is_empty() {
            return Err(invalid(
                "TRUSTED_PROXIES",
                "is required with USER_HEADER (the CIDRs of the auth proxy; any client could otherwise name any user; `0.0.0.0/0,::/0` trusts every peer on purpose)",
            ));
        }
        let allowed_origins = list(get("ALLOWED_ORIGINS"))
            .map(|entry| parse_origin(&entry))
            .collect::<Result<Vec<_>, _>>()?;

        let config = Config {
            apps,
            dify_base_url,
            listen: SocketAddr::new(host, port),
            cookie_same_site: parse_same_site(get("COOKIE_SAMESITE"))?,
            session_secret,
            user_header,
            trusted_proxies,
            allowed_origins,
            embed: EmbedOrigins::parse(get("EMBED_ORIGINS"))?,
            max_body_bytes: parse_or("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), 1_048_576)?,
            max_upload_bytes: parse_or("MAX_UPLOAD_BYTES", get("MAX_UPLOAD_BYTES"), 15_728_640)?,
            rate_limit_per_minute: parse_or(
                "RATE_LIMIT_PER_MINUTE",
                get("RATE_LIMIT_PER_MINUTE"),
                60,
            )?,
            max_streams_per_identity: parse_or(
                "MAX_STREAMS_PER_IDENTITY",
                get("MAX_STREAMS_PER_IDENTITY"),
                4,
            )?,
            max_concurrent_streams: parse_or(
                "MAX_CONCURRENT_STREAMS",
                get("MAX_CONCURRENT_STREAMS"),
                10_000,
            )?,
            upstream_connect_timeout: secs(
                "UPSTREAM_CONNECT_TIMEOUT_SECS",
                get("UPSTREAM_CONNECT_TIMEOUT_SECS"),
                5,
            )?,
            upstream_timeout: secs("UPSTREAM_TIMEOUT_SECS", get("UPSTREAM_TIMEOUT_SECS"), 100)?,
            stream_idle_timeout: secs(
                "STREAM_IDLE_TIMEOUT_SECS",
                get("STREAM_IDLE_TIMEOUT_SECS"),
                120,
            )?,
            shutdown_grace: secs("SHUTDOWN_GRACE_SECS", get("SHUTDOWN_GRACE_SECS"), 25)?,
            request_header_timeout: secs(
                "REQUEST_HEADER_TIMEOUT_SECS",
                get("REQUEST_HEADER_TIMEOUT_SECS"),
                30,
            )?,
            request_body_timeout: secs(
                "REQUEST_BODY_TIMEOUT_SECS",
                get("REQUEST_BODY_TIMEOUT_SECS"),
                30,
            )?,
            request_body_deadline: secs(
                "REQUEST_BODY_DEADLINE_SECS",
                get("REQUEST_BODY_DEADLINE_SECS"),
                120,
            )?,
            max_buffered_body_bytes: parse_or(
                "MAX_BUFFERED_BODY_BYTES",
                get("MAX_BUFFERED_BODY_BYTES"),
                67_108_864,
            )?,
            max_connections_per_peer: parse_or(
                "MAX_CONNECTIONS_PER_PEER",
                get("MAX_CONNECTIONS_PER_PEER"),
                256,
            )?,
            max_concurrent_upstream_calls: parse_or(
                "MAX_CONCURRENT_UPSTREAM_CALLS",
                get("MAX_CONCURRENT_UPSTREAM_CALLS"),
                1024,
            )?,
            worker_threads: match parse_or("WORKER_THREADS", get("WORKER_THREADS"), 0usize)? {
                0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
                n if n > 1024 => return Err(invalid("WORKER_THREADS", "is more than 1024")),
                n => n,
            },
            metrics_addr: get("METRICS_ADDR")
                .map(|a| {
                    a.trim()
                        .parse()
                        .map_err(|_| invalid("METRICS_ADDR", "is not a socket address (ip:port)"))
                })
                .transpose()?,
            static_dir: get("STATIC_DIR")
                .map(|d| {
                    let path = PathBuf::from(d);
                    if path.is_dir() {
                        Ok(path)
                    } else {
                        Err(invalid("STATIC_DIR", "is not a folder"))
                    }
                })
                .transpose()?,
            log_format: match get("LOG_FORMAT").as_deref().map(str::trim) {
                None | Some("pretty") => LogFormat::Pretty,
                Some("json") => LogFormat::Json,
                Some(_) => return Err(invalid("LOG_FORMAT", "must be `pretty` or `json`")),
            },
            shared: SharedConfig::from_lookup(get)?,
            check_dify_at_start: false,
        };
        if config.max_buffered_body_bytes < config.max_body_bytes {
            return Err(invalid(
                "MAX_BUFFERED_BODY_BYTES",
                "must be at least MAX_BODY_BYTES (one whole body must fit)",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_apps;
