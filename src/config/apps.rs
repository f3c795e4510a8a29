//! Which Dify apps are served (API.md §5): one key (`DIFY_API_KEY`, `DIFY_API_KEY_FILE`) or
//! named apps (`DIFY_APPS`, `DIFY_APPS_FILE`). Every failure names its variable and the entry
//! by name or position, never by its key.

use reqwest::Url;
use secrecy::SecretString;

use super::ConfigError;
use super::parse::{invalid, is_placeholder_key, parse_base_url_for};

/// The name of the one app configured with `DIFY_API_KEY` (metrics and logs carry it).
pub const DEFAULT_APP: &str = "default";

/// The longest app name: names go into paths, metric labels and log lines.
const MAX_NAME_LEN: usize = 32;

const SOURCES: [&str; 4] = [
    "DIFY_API_KEY",
    "DIFY_API_KEY_FILE",
    "DIFY_APPS",
    "DIFY_APPS_FILE",
];

/// One Dify app: its name (a path segment), its key and its Service API base URL.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub name: String,
    pub api_key: SecretString,
    pub base_url: Url,
}

/// The apps, and whether they are named: named apps live under `/apps/{name}`, the one app of
/// `DIFY_API_KEY` at the root.
#[derive(Clone, Debug)]
pub struct AppsConfig {
    pub apps: Vec<AppConfig>,
    pub named: bool,
}

/// Reads the one source that is set. `demo` allows none (the caller supplies emulated apps).
pub(super) fn parse(
    get: &dyn Fn(&str) -> Option<String>,
    default_base: &Url,
    demo: bool,
    demo_key: &str,
) -> Result<AppsConfig, ConfigError> {
    let set: Vec<&'static str> = SOURCES.into_iter().filter(|v| get(v).is_some()).collect();
    let source = match set.as_slice() {
        [] if demo => {
            return Ok(one(SecretString::from(demo_key), default_base));
        }
        [] => {
            return Err(invalid(
                "DIFY_API_KEY",
                "is required (the Dify app key, app-…), or DIFY_API_KEY_FILE, DIFY_APPS or DIFY_APPS_FILE; use --demo to run without one",
            ));
        }
        [one] => *one,
        [first, second, ..] => {
            return Err(invalid(
                second,
                format!(
                    "cannot be set together with {first}: set exactly one of DIFY_API_KEY, DIFY_API_KEY_FILE, DIFY_APPS, DIFY_APPS_FILE"
                ),
            ));
        }
    };
    let value = get(source).unwrap_or_default();
    if demo && source == "DIFY_API_KEY" && is_placeholder_key(&value) {
        return Ok(one(SecretString::from(demo_key), default_base));
    }
    match source {
        "DIFY_API_KEY" => Ok(one(key(source, &value, "the key")?, default_base)),
        "DIFY_API_KEY_FILE" => {
            let text = read(source, &value)?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.trim().is_empty() {
                return Err(invalid(source, "the file is empty"));
            }
            Ok(one(key(source, text, "the key in the file")?, default_base))
        }
        "DIFY_APPS" => {
            let entries = value
                .split(',')
                .enumerate()
                .map(|(i, e)| (format!("entry {}", i + 1), e.trim().to_owned()));
            named(source, entries, default_base)
        }
        _ => {
            let text = read(source, &value)?;
            let entries = text
                .lines()
                .enumerate()
                .map(|(i, line)| (format!("line {}", i + 1), line.trim().to_owned()))
                .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
            named(source, entries, default_base)
        }
    }
}

fn one(api_key: SecretString, default_base: &Url) -> AppsConfig {
    AppsConfig {
        apps: vec![AppConfig {
            name: DEFAULT_APP.to_owned(),
            api_key,
            base_url: default_base.clone(),
        }],
        named: false,
    }
}

fn read(var: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path.trim())
        .map_err(|e| invalid(var, format!("cannot read the file ({})", e.kind())))
}

/// A key as it goes into the `Authorization` header; `what` says where it was, never what.
fn key(var: &'static str, raw: &str, what: &str) -> Result<SecretString, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid(var, format!("{what} is empty")));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            var,
            format!("{what} contains characters that cannot go in a header"),
        ));
    }
    if is_placeholder_key(raw) {
        return Err(invalid(
            var,
            format!(
                "{what} is still the placeholder from .env.example: put your Dify app's API key (app-…) there, or use --demo"
            ),
        ));
    }
    Ok(SecretString::from(raw.to_owned()))
}

pub fn is_app_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let lower_or_digit = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && lower_or_digit(&bytes[0])
        && bytes.iter().all(|b| lower_or_digit(b) || *b == b'-')
}

/// `name=key` or `name=key@base_url` entries; `at` says where each is (entry or line number).
fn named(
    var: &'static str,
    entries: impl Iterator<Item = (String, String)>,
    default_base: &Url,
) -> Result<AppsConfig, ConfigError> {
    let mut apps: Vec<AppConfig> = Vec::new();
    for (at, entry) in entries {
        let Some((name, rest)) = entry.split_once('=') else {
            return Err(invalid(var, format!("{at} is not `name=key`")));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(var, format!("{at} has an empty name")));
        }
        // A bad name is not echoed: it could be a key pasted in the wrong place.
        if !is_app_name(name) {
            return Err(invalid(
                var,
                format!(
                    "{at}: the name must be 1–32 of a-z, 0-9 and `-`, starting with a letter or digit"
                ),
            ));
        }
        if apps.iter().any(|app| app.name == name) {
            return Err(invalid(var, format!("{at}: app {name:?} is named twice")));
        }
        let (raw_key, base) = match rest.split_once('@') {
            Some((k, base)) => (k, Some(base)),
            None => (rest, None),
        };
        let api_key = key(var, raw_key, &format!("{at}: the key of app {name:?}"))?;
        let base_url = match base {
            None => default_base.clone(),
            Some(base) => parse_base_url_for(var, base).map_err(|e| {
                invalid(
                    var,
                    format!("{at}: the base URL of app {name:?} {}", e.reason),
                )
            })?,
        };
        apps.push(AppConfig {
            name: name.to_owned(),
            api_key,
            base_url,
        });
    }
    if apps.is_empty() {
        return Err(invalid(var, "names no app"));
    }
    Ok(AppsConfig { apps, named: true })
}
