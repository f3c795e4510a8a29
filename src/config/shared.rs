//! Settings for state shared across replicas (API.md §7): Redis, token budgets, resumable
//! streams.

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;
use super::parse::{invalid, parse_or};

#[derive(Clone, Debug)]
pub struct SharedConfig {
    /// `REDIS_URL`; it may hold a password, so it stays secret (log it with [`super::redacted`]).
    pub redis_url: Option<SecretString>,
    /// The URL with its credentials hidden, for log lines.
    pub redis_url_shown: Option<String>,
    /// `REDIS_CA_CERT_FILE`'s PEM: the CAs a `rediss://` server's certificate must be signed by
    /// instead of the system's. Certificates are public: not secret.
    pub redis_ca_pem: Option<Vec<u8>>,
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

const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The Redis client for `url` (nothing is connected yet). A `rediss://` server's certificate is
/// checked against `ca_pem`'s CAs when given, else against the system's (rustls-native-certs:
/// the OS bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set).
pub fn redis_client(
    url: &SecretString,
    ca_pem: Option<&[u8]>,
) -> redis::RedisResult<redis::Client> {
    match ca_pem {
        None => redis::Client::open(url.expose_secret()),
        Some(pem) => redis::Client::build_with_tls(
            url.expose_secret(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
    }
}

impl SharedConfig {
    pub(super) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<SharedConfig, ConfigError> {
        let (redis_url, redis_url_shown, redis_tls) = match get("REDIS_URL") {
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
                if url.fragment().is_some() {
                    return Err(invalid(
                        "REDIS_URL",
                        "must not have a #fragment (#insecure, no certificate check, is not supported: for a private CA set REDIS_CA_CERT_FILE)",
                    ));
                }
                let url_secret = SecretString::from(raw);
                // What the client would refuse at every connection is refused here, once.
                // Its messages never repeat the URL.
                redis_client(&url_secret, None).map_err(|e| {
                    invalid("REDIS_URL", format!("is refused by the Redis client: {e}"))
                })?;
                let tls = url.scheme() == "rediss";
                (Some(url_secret), Some(super::redacted(&url)), tls)
            }
            None => (None, None, false),
        };
        let redis_ca_pem = match get("REDIS_CA_CERT_FILE") {
            None => None,
            Some(path) => {
                let Some(url) = redis_url.as_ref().filter(|_| redis_tls) else {
                    return Err(invalid(
                        "REDIS_CA_CERT_FILE",
                        "needs a rediss:// REDIS_URL (it names the CA that signed the Redis server's TLS certificate)",
                    ));
                };
                let pem = std::fs::read(path.trim()).map_err(|e| {
                    invalid(
                        "REDIS_CA_CERT_FILE",
                        format!("cannot read the file ({})", e.kind()),
                    )
                })?;
                if !pem
                    .windows(PEM_CERTIFICATE.len())
                    .any(|w| w == PEM_CERTIFICATE)
                {
                    return Err(invalid(
                        "REDIS_CA_CERT_FILE",
                        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ));
                }
                redis_client(url, Some(&pem)).map_err(|e| {
                    invalid(
                        "REDIS_CA_CERT_FILE",
                        format!("is not a usable CA certificate: {e}"),
                    )
                })?;
                Some(pem)
            }
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
            redis_ca_pem,
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
            ("REDIS_URL", "rediss://:hunter2@cache:6380/0#insecure"),
            ("REDIS_URL", "redis://:hunter2@0.0.0.0:6379"),
            ("REDIS_URL", "redis://:hunter2@cache:6379/0?protocol=9"),
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

    /// A CA certificate (public; its key was thrown away).
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAUGgAwIBAgIUd429apHL8nU65BTlF9/tmM1QYnIwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXZGlmeS1iZmYgY29uZmlnIHRlc3QgQ0EwIBcNMjYxMjA3MDE1
ODI4WhgPMjEyNjExMTMwMTU4MjhaMCIxIDAeBgNVBAMMF2RpZnktYmZmIGNvbmZp
ZyB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEW3h7u+Kd4AO84tw+
65sObFtnt1KcT/XCb7wobLdWnfc8IHamlJXWYbIqzlKS4/uoRC/IbNB0dGxKcrSu
+lfW06NTMFEwHQYDVR0OBBYEFFJQ0+BaJBqWoNAhcEJR5G1gwb08MB8GA1UdIwQY
MBaAFFJQ0+BaJBqWoNAhcEJR5G1gwb08MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDRwAwRAIgKE2P41vpDU1NKVmNUVMx1btpy431P10GLsvo2Zd+Tk8CIFjI
L/JDgOQ7G/5zZzBxc9JbldyRr2Zu/VxghkemrK2S
-----END CERTIFICATE-----
";

    /// A file holding `text`, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("dify-bff-ca-{}.pem", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn without_a_ca_file_a_rediss_server_is_checked_against_the_systems_cas() {
        let c = load(&[("REDIS_URL", "rediss://:pw@cache.example.com:6380/0")]).unwrap();
        assert!(c.redis_url.is_some());
        assert!(c.redis_ca_pem.is_none());
    }

    #[test]
    fn the_private_ca_of_a_rediss_server_is_read_from_its_file() {
        let ca = TempFile::new(CA_PEM);
        let c = load(&[
            ("REDIS_URL", "rediss://:pw@cache:6380/0"),
            ("REDIS_CA_CERT_FILE", ca.path()),
        ])
        .unwrap();
        assert_eq!(c.redis_ca_pem.as_deref(), Some(CA_PEM.as_bytes()));
    }

    #[test]
    fn a_ca_file_needs_a_rediss_url() {
        let ca = TempFile::new(CA_PEM);
        for url in [None, Some("redis://:hunter2@cache:6379/0")] {
            let mut vars = vec![("REDIS_CA_CERT_FILE", ca.path())];
            vars.extend(url.map(|u| ("REDIS_URL", u)));
            let err = load(&vars).unwrap_err();
            assert_eq!(err.var, "REDIS_CA_CERT_FILE");
            assert!(err.reason.contains("rediss://"), "{}", err.reason);
            assert!(!err.reason.contains("hunter2"), "{}", err.reason);
        }
    }

    #[test]
    fn a_ca_file_that_holds_no_usable_certificate_is_refused() {
        let no_such = std::env::temp_dir().join("dify-bff-no-such-ca.pem");
        let key_only =
            TempFile::new("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let bad_base64 =
            TempFile::new("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        let not_a_certificate =
            TempFile::new("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        for path in [
            no_such.to_str().unwrap(),
            key_only.path(),
            bad_base64.path(),
            not_a_certificate.path(),
        ] {
            let err = load(&[
                ("REDIS_URL", "rediss://:hunter2@cache:6380/0"),
                ("REDIS_CA_CERT_FILE", path),
            ])
            .unwrap_err();
            assert_eq!(err.var, "REDIS_CA_CERT_FILE", "{path}");
            assert!(!err.reason.contains("hunter2"), "{}", err.reason);
        }
    }

    #[test]
    fn a_zero_grace_turns_resuming_off() {
        let c = load(&[("STREAM_RESUME_GRACE_SECS", "0")]).unwrap();
        assert!(!c.resume_enabled());
    }
}
