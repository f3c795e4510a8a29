//! Settings for state shared across replicas (API.md §7): Redis, token budgets, resumable
//! streams.

use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;

use super::ConfigError;
use super::parse::{invalid, parse_or};

#[derive(Clone, Debug)]
pub struct SharedConfig {
    /// `REDIS_URL`; it may hold a password, so it stays secret (log it with [`super::redacted`]).
    pub redis_url: Option<SecretString>,
    /// The URL with its credentials hidden, for log lines.
    pub redis_url_shown: Option<String>,
    /// Tokens per identity per UTC day; `0` = no budget.
    pub token_budget_per_day: u64,
    /// How long a stream's bytes stay resumable after it ends; zero turns resuming off.
    pub stream_resume: Duration,
    /// Bytes kept per stream for resuming (older bytes are dropped first).
    pub stream_resume_max_bytes: usize,
    /// After the browser leaves, how long before Dify's stop is called; zero = at once (and no
    /// resuming: nothing would be left to resume).
    pub stream_resume_grace: Duration,
    /// A stream slot held in Redis lives this long unless renewed (renewed every third of it),
    /// so a replica that dies frees its slots within this. Not an environment variable.
    pub stream_lease: Duration,
    /// While Redis is unreachable, at most one ERROR line per this long.
    pub redis_error_log_every: Duration,
}

impl SharedConfig {
    pub(super) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<SharedConfig, ConfigError> {
        let (redis_url, redis_url_shown) = match get("REDIS_URL") {
            Some(raw) => {
                let raw = raw.trim().to_owned();
                let url = Url::parse(&raw).map_err(|_| {
                    invalid(
                        "REDIS_URL",
                        "is not a URL (redis://[:password@]host[:port][/db])",
                    )
                })?;
                if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
                    return Err(invalid(
                        "REDIS_URL",
                        "must be a redis:// or rediss:// URL with a host",
                    ));
                }
                let db = url.path().trim_start_matches('/');
                if !db.is_empty() && db.parse::<u32>().is_err() {
                    return Err(invalid("REDIS_URL", "the path must be a database number"));
                }
                (Some(SecretString::from(raw)), Some(super::redacted(&url)))
            }
            None => (None, None),
        };
        let resume_secs: u64 = parse_or("STREAM_RESUME_SECS", get("STREAM_RESUME_SECS"), 300)?;
        let grace_secs: u64 = parse_or(
            "STREAM_RESUME_GRACE_SECS",
            get("STREAM_RESUME_GRACE_SECS"),
            10,
        )?;
        const DAY: u64 = 24 * 60 * 60;
        if resume_secs > DAY {
            return Err(invalid(
                "STREAM_RESUME_SECS",
                "must be at most 86400 (a day)",
            ));
        }
        if grace_secs > 3600 {
            return Err(invalid(
                "STREAM_RESUME_GRACE_SECS",
                "must be at most 3600 (an hour)",
            ));
        }
        Ok(SharedConfig {
            redis_url,
            redis_url_shown,
            token_budget_per_day: parse_or("TOKEN_BUDGET_PER_DAY", get("TOKEN_BUDGET_PER_DAY"), 0)?,
            stream_resume: Duration::from_secs(resume_secs),
            stream_resume_max_bytes: parse_or(
                "STREAM_RESUME_MAX_BYTES",
                get("STREAM_RESUME_MAX_BYTES"),
                1_048_576,
            )?,
            stream_resume_grace: Duration::from_secs(grace_secs),
            stream_lease: Duration::from_secs(60),
            redis_error_log_every: Duration::from_secs(60),
        })
    }

    /// Streams are resumable only when their bytes are kept and the upstream outlives a
    /// client that leaves.
    pub fn resume_enabled(&self) -> bool {
        !self.stream_resume.is_zero()
            && !self.stream_resume_grace.is_zero()
            && self.stream_resume_max_bytes > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<SharedConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SharedConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = load(&[]).unwrap();
        assert!(c.redis_url.is_none());
        assert_eq!(c.token_budget_per_day, 0);
        assert_eq!(c.stream_resume, Duration::from_secs(300));
        assert_eq!(c.stream_resume_max_bytes, 1_048_576);
        assert_eq!(c.stream_resume_grace, Duration::from_secs(10));
        assert!(c.resume_enabled());
    }

    #[test]
    fn a_redis_password_is_kept_secret_and_hidden_when_shown() {
        let c = load(&[("REDIS_URL", "redis://:hunter2secret@cache:6380/3")]).unwrap();
        let url = c.redis_url.unwrap();
        assert_eq!(url.expose_secret(), "redis://:hunter2secret@cache:6380/3");
        let shown = c.redis_url_shown.unwrap();
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(format!("{url:?}").find("hunter2secret").is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("REDIS_URL", "http://cache:6379"),
            ("REDIS_URL", "not a url"),
            ("REDIS_URL", "redis://cache/zero"),
            ("TOKEN_BUDGET_PER_DAY", "-1"),
            ("STREAM_RESUME_SECS", "many"),
            ("STREAM_RESUME_MAX_BYTES", "1e6"),
            ("STREAM_RESUME_GRACE_SECS", "99999"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(!err.reason.contains("hunter2"), "{}", err.reason);
        }
    }

    #[test]
    fn a_zero_grace_turns_resuming_off() {
        let c = load(&[("STREAM_RESUME_GRACE_SECS", "0")]).unwrap();
        assert!(!c.resume_enabled());
    }
}
