//! Typed, validated configuration read from the environment (API.md §1).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum_extra::extract::cookie::SameSite;
use http::HeaderName;
use ipnet::IpNet;
use reqwest::Url;
use secrecy::SecretString;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub dify_api_key: SecretString,
    pub dify_base_url: Url,
    pub listen: SocketAddr,
    pub cookie_same_site: SameSite,
    /// `None` means a random per-process secret.
    pub session_secret: Option<SecretString>,
    pub user_header: Option<HeaderName>,
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_origins: Vec<String>,
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
    pub metrics_addr: Option<SocketAddr>,
    pub static_dir: Option<PathBuf>,
    pub log_format: LogFormat,
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

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

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

        let dify_api_key = match get("DIFY_API_KEY") {
            Some(key) => parse_api_key(&key)?,
            None if demo => SecretString::from(DEMO_API_KEY),
            None => {
                return Err(invalid(
                    "DIFY_API_KEY",
                    "is required (the Dify app key, app-…); use --demo to run without one",
                ));
            }
        };
        let dify_base_url = parse_base_url(
            get("DIFY_BASE_URL")
                .as_deref()
                .unwrap_or("https://api.dify.ai/v1"),
        )?;
        let host: IpAddr = parse_or("HOST", get("HOST"), IpAddr::from([127, 0, 0, 1]))?;
        let port: u16 = parse_or("PORT", get("PORT"), 3000)?;
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
            dify_api_key,
            dify_base_url,
            listen: SocketAddr::new(host, port),
            cookie_same_site: parse_same_site(get("COOKIE_SAMESITE"))?,
            session_secret,
            user_header,
            trusted_proxies,
            allowed_origins,
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

fn list(value: Option<String>) -> impl Iterator<Item = String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

fn parse_or<T: std::str::FromStr>(
    var: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| invalid(var, format!("cannot parse {:?}", v.trim()))),
    }
}

/// The longest timeout accepted: a year. Far beyond any use, and far enough from the clock's
/// limits that a deadline computed from it never overflows.
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;

fn secs(var: &'static str, value: Option<String>, default: u64) -> Result<Duration, ConfigError> {
    let n: u64 = parse_or(var, value, default)?;
    if !(1..=MAX_TIMEOUT_SECS).contains(&n) {
        return Err(invalid(
            var,
            format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds"),
        ));
    }
    Ok(Duration::from_secs(n))
}

fn parse_api_key(key: &str) -> Result<SecretString, ConfigError> {
    let key = key.trim();
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "DIFY_API_KEY",
            "contains characters that cannot go in a header",
        ));
    }
    Ok(SecretString::from(key.to_owned()))
}

fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    let mut url =
        Url::parse(raw).map_err(|e| invalid("DIFY_BASE_URL", format!("is not a URL ({e})")))?;
    // The URL standard reads `http:///v1` as host `v1` and `http:host` as host `host`; in a
    // setting, a missing or mangled authority is a mistake to report, not to repair.
    let has_authority = raw
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with(['/', '\\']));
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !has_authority {
        return Err(invalid(
            "DIFY_BASE_URL",
            "must be an http(s) URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "DIFY_BASE_URL",
            "must not have a query or fragment",
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The base URL as it may be shown (logs): any user name or password replaced by `***`.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("***");
        let _ = shown.set_password(None);
    }
    shown.to_string()
}

fn parse_same_site(value: Option<String>) -> Result<SameSite, ConfigError> {
    match value
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("lax") => Ok(SameSite::Lax),
        Some("strict") => Ok(SameSite::Strict),
        Some("none") => Ok(SameSite::None),
        Some(_) => Err(invalid(
            "COOKIE_SAMESITE",
            "must be `Lax`, `Strict` or `None`",
        )),
    }
}

fn parse_cidr(entry: &str) -> Result<IpNet, ConfigError> {
    entry
        .parse::<IpNet>()
        .map_err(|_| invalid("TRUSTED_PROXIES", format!("{entry:?} is not a CIDR")))
}

/// An origin is exactly `http(s)://host[:port]`: no path, no wildcard.
fn parse_origin(entry: &str) -> Result<String, ConfigError> {
    let bad = || {
        invalid(
            "ALLOWED_ORIGINS",
            format!("{entry:?} is not an http(s)://host[:port] origin"),
        )
    };
    if entry.contains('*') {
        return Err(bad());
    }
    let url = Url::parse(entry).map_err(|_| bad())?;
    let well_formed = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && (url.path() == "/" && !entry.ends_with('/') || url.path().is_empty());
    if !well_formed {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], demo: bool) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned(), demo)
    }

    fn key() -> (&'static str, &'static str) {
        ("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = load(&[key()], false).unwrap();
        assert_eq!(config.dify_base_url.as_str(), "https://api.dify.ai/v1/");
        assert_eq!(config.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.max_body_bytes, 1_048_576);
        assert_eq!(config.max_upload_bytes, 15_728_640);
        assert_eq!(config.rate_limit_per_minute, 60);
        assert_eq!(config.max_streams_per_identity, 4);
        assert_eq!(config.max_concurrent_streams, 10_000);
        assert_eq!(config.upstream_timeout, Duration::from_secs(100));
        assert_eq!(config.stream_idle_timeout, Duration::from_secs(120));
        assert_eq!(config.shutdown_grace, Duration::from_secs(25));
        assert_eq!(config.request_header_timeout, Duration::from_secs(30));
        assert_eq!(config.request_body_timeout, Duration::from_secs(30));
        assert_eq!(config.request_body_deadline, Duration::from_secs(120));
        assert_eq!(config.max_buffered_body_bytes, 64 * 1024 * 1024);
        assert_eq!(config.max_connections_per_peer, 256);
        assert_eq!(config.max_concurrent_upstream_calls, 1024);
        assert_eq!(config.cookie_same_site, SameSite::Lax);
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn missing_key_names_the_variable() {
        assert_eq!(load(&[], false).unwrap_err().var, "DIFY_API_KEY");
    }

    #[test]
    fn demo_needs_no_key() {
        let config = load(&[], true).unwrap();
        assert_eq!(config.dify_api_key.expose_secret(), DEMO_API_KEY);
    }

    #[test]
    fn base_url_trailing_slash_is_tolerated() {
        let a = load(&[key(), ("DIFY_BASE_URL", "http://dify.local/v1/")], false).unwrap();
        let b = load(&[key(), ("DIFY_BASE_URL", "http://dify.local/v1")], false).unwrap();
        assert_eq!(a.dify_base_url, b.dify_base_url);
        assert_eq!(
            a.dify_base_url.join("chat-messages").unwrap().as_str(),
            "http://dify.local/v1/chat-messages"
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("DIFY_BASE_URL", "not a url"),
            ("DIFY_BASE_URL", "ftp://x/v1"),
            ("PORT", "eighty"),
            ("HOST", "localhost:3000"),
            ("SESSION_SECRET", "short"),
            ("ALLOWED_ORIGINS", "*"),
            ("ALLOWED_ORIGINS", "https://a.example/path"),
            ("ALLOWED_ORIGINS", "a.example"),
            ("COOKIE_SAMESITE", "sometimes"),
            ("TRUSTED_PROXIES", "10.0.0.1/99"),
            ("STATIC_DIR", "/definitely/not/here"),
            ("MAX_BODY_BYTES", "-1"),
            ("UPSTREAM_TIMEOUT_SECS", "0"),
            ("REQUEST_HEADER_TIMEOUT_SECS", "0"),
            ("REQUEST_BODY_TIMEOUT_SECS", "soon"),
            ("REQUEST_BODY_DEADLINE_SECS", "0"),
            ("MAX_BUFFERED_BODY_BYTES", "lots"),
            ("MAX_CONNECTIONS_PER_PEER", "-3"),
            ("MAX_CONCURRENT_UPSTREAM_CALLS", "many"),
            ("METRICS_ADDR", "nine"),
            ("LOG_FORMAT", "xml"),
        ];
        for (var, value) in cases {
            let err = load(&[key(), (var, value)], false).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}");
        }
    }

    #[test]
    fn a_base_url_without_a_host_is_refused_not_repaired() {
        for value in [
            "http:///v1",
            "https:dify.local/v1",
            "http:/dify.local/v1",
            "http://",
        ] {
            let err = load(&[key(), ("DIFY_BASE_URL", value)], false).unwrap_err();
            assert_eq!(err.var, "DIFY_BASE_URL", "{value}");
        }
    }

    #[test]
    fn a_timeout_too_long_for_the_clock_is_refused_at_start_up() {
        for var in [
            "UPSTREAM_CONNECT_TIMEOUT_SECS",
            "UPSTREAM_TIMEOUT_SECS",
            "STREAM_IDLE_TIMEOUT_SECS",
            "SHUTDOWN_GRACE_SECS",
            "REQUEST_HEADER_TIMEOUT_SECS",
            "REQUEST_BODY_TIMEOUT_SECS",
            "REQUEST_BODY_DEADLINE_SECS",
        ] {
            let err = load(&[key(), (var, "9223372036854775807")], false).unwrap_err();
            assert_eq!(err.var, var);
            let year = load(&[key(), (var, "31536000")], false);
            assert!(year.is_ok(), "{var}: a year is accepted");
        }
    }

    #[test]
    fn lists_ignore_spaces_around_commas() {
        let config = load(
            &[
                key(),
                (
                    "ALLOWED_ORIGINS",
                    " https://a.example , http://b.example:8080 ",
                ),
                ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1/32"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            config.allowed_origins,
            vec!["https://a.example", "http://b.example:8080"]
        );
        assert_eq!(config.trusted_proxies.len(), 2);
    }

    #[test]
    fn header_mode_without_trusted_proxies_is_refused() {
        let err = load(&[key(), ("USER_HEADER", "X-Forwarded-User")], false).unwrap_err();
        assert_eq!(err.var, "TRUSTED_PROXIES");
        let everyone = load(
            &[
                key(),
                ("USER_HEADER", "X-Forwarded-User"),
                ("TRUSTED_PROXIES", "0.0.0.0/0,::/0"),
            ],
            false,
        );
        assert!(everyone.is_ok(), "trusting everyone on purpose is allowed");
    }

    #[test]
    fn a_password_in_the_base_url_is_never_shown() {
        let config = load(
            &[
                key(),
                ("DIFY_BASE_URL", "https://bob:hunter2@dify.local/v1"),
            ],
            false,
        )
        .unwrap();
        let shown = redacted(&config.dify_base_url);
        assert!(
            !shown.contains("hunter2") && !shown.contains("bob"),
            "{shown}"
        );
        assert_eq!(shown, "https://***@dify.local/v1/");
    }

    #[test]
    fn the_error_line_never_shows_the_secret() {
        let err = load(&[key(), ("SESSION_SECRET", "tiny-secret")], false).unwrap_err();
        assert!(!err.to_string().contains("tiny-secret"));
    }
}
