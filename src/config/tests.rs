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
    assert_eq!(config.apps.apps.len(), 1);
    assert_eq!(config.apps.apps[0].api_key.expose_secret(), DEMO_API_KEY);
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

#[test]
fn the_example_files_placeholder_key_is_refused_naming_the_variable() {
    let err = load(&[("DIFY_API_KEY", "app-xxxxxxxxxxxxxxxxxxxxxxxx")], false).unwrap_err();
    assert_eq!(err.var, "DIFY_API_KEY");
    assert!(err.reason.contains("placeholder"), "{}", err.reason);
}

#[test]
fn localhost_is_read_as_the_loopback_address() {
    let config = load(&[key(), ("HOST", "localhost")], false).unwrap();
    assert_eq!(config.listen, "127.0.0.1:3000".parse().unwrap());
}

#[test]
fn a_host_name_is_refused_with_an_example_address() {
    let err = load(&[key(), ("HOST", "example.com")], false).unwrap_err();
    assert_eq!(err.var, "HOST");
    assert!(err.reason.contains("such as 127.0.0.1"), "{}", err.reason);
}

#[test]
fn an_out_of_range_port_says_the_range() {
    let err = load(&[key(), ("PORT", "70000")], false).unwrap_err();
    assert_eq!(err.var, "PORT");
    assert!(err.reason.contains("0 to 65535"), "{}", err.reason);
}
