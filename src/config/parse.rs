//! Parsing one variable's value; each failure names its variable.

use std::net::IpAddr;
use std::time::Duration;

use axum_extra::extract::cookie::SameSite;
use ipnet::IpNet;
use reqwest::Url;

use super::ConfigError;

pub(super) fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

pub(super) fn list(value: Option<String>) -> impl Iterator<Item = String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

pub(super) fn parse_or<T: std::str::FromStr>(
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

/// An IP address; `localhost` is 127.0.0.1 (a name would need a resolver and could mean
/// several addresses).
pub(super) fn parse_host(value: Option<String>) -> Result<IpAddr, ConfigError> {
    let Some(value) = value else {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    value.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
        invalid(
            "HOST",
            format!(
                "{value:?} is not an IP address: use an IP address such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface); the port goes in PORT"
            ),
        )
    })
}

pub(super) fn parse_port(value: Option<String>) -> Result<u16, ConfigError> {
    let Some(value) = value else { return Ok(3000) };
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(port) => u16::try_from(port).map_err(|_| {
            invalid(
                "PORT",
                format!("{port} is out of range: a port is 0 to 65535"),
            )
        }),
        Err(_) => Err(invalid(
            "PORT",
            format!("{value:?} is not a port number (0 to 65535, e.g. 3000)"),
        )),
    }
}

/// The longest timeout accepted: a year. Far beyond any use, and far enough from the clock's
/// limits that a deadline computed from it never overflows.
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;

pub(super) fn secs(
    var: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    let n: u64 = parse_or(var, value, default)?;
    if !(1..=MAX_TIMEOUT_SECS).contains(&n) {
        return Err(invalid(
            var,
            format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds"),
        ));
    }
    Ok(Duration::from_secs(n))
}

pub(super) fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    parse_base_url_for("DIFY_BASE_URL", raw)
}

/// `.env.example`'s `app-xxxxxxxxxxxxxxxxxxxxxxxx` (any number of `x`), or `app-…`.
pub(super) fn is_placeholder_key(key: &str) -> bool {
    key.trim().strip_prefix("app-").is_some_and(|rest| {
        rest == "…"
            || rest == "..."
            || (!rest.is_empty() && rest.bytes().all(|b| b == b'x' || b == b'X'))
    })
}

/// A Dify Service API base URL in `var` (`DIFY_BASE_URL`, or an app's in `DIFY_APPS`).
pub(super) fn parse_base_url_for(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).map_err(|e| invalid(var, format!("is not a URL ({e})")))?;
    // The URL standard reads `http:///v1` as host `v1` and `http:host` as host `host`; in a
    // setting, a missing or mangled authority is a mistake to report, not to repair.
    let has_authority = raw
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with(['/', '\\']));
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || !has_authority {
        return Err(invalid(var, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(var, "must not have a query or fragment"));
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

pub(super) fn parse_same_site(value: Option<String>) -> Result<SameSite, ConfigError> {
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

pub(super) fn parse_cidr(entry: &str) -> Result<IpNet, ConfigError> {
    entry
        .parse::<IpNet>()
        .map_err(|_| invalid("TRUSTED_PROXIES", format!("{entry:?} is not a CIDR")))
}

/// An origin is exactly `http(s)://host[:port]`: no path, no wildcard.
pub(super) fn parse_origin(entry: &str) -> Result<String, ConfigError> {
    parse_origin_of("ALLOWED_ORIGINS", entry)
}

/// [`parse_origin`] for a list held in `var`.
pub(super) fn parse_origin_of(var: &'static str, entry: &str) -> Result<String, ConfigError> {
    let bad = || {
        invalid(
            var,
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
