//! The environment variables, listed once: `--help` prints this list, and tests check that the
//! configuration reads no variable missing here and that the README's table names each one.

/// `(name, default, meaning)`, in the README's order.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "DIFY_API_KEY",
        "required unless --demo",
        "the Dify app key (app-…); never sent to a browser or logged",
    ),
    (
        "DIFY_BASE_URL",
        "https://api.dify.ai/v1",
        "Dify Service API base URL, ending in /v1",
    ),
    (
        "DIFY_API_KEY_FILE",
        "unset",
        "the one key, read from this file (trailing newline ignored)",
    ),
    (
        "DIFY_APPS",
        "unset",
        "several apps: name=key or name=key@base_url, comma-separated",
    ),
    (
        "DIFY_APPS_FILE",
        "unset",
        "the same entries, one per line (# comments), e.g. from a mounted secret",
    ),
    (
        "HOST",
        "127.0.0.1",
        "listen address: an IP address (0.0.0.0 for every interface; localhost = 127.0.0.1)",
    ),
    ("PORT", "3000", "listen port"),
    (
        "COOKIE_SAMESITE",
        "Lax",
        "Lax, Strict or None (None forces Secure, for iframes on other sites)",
    ),
    (
        "SESSION_SECRET",
        "random per process",
        "cookie-signing key, at least 32 bytes; set it for several replicas",
    ),
    (
        "USER_HEADER",
        "unset",
        "trusted-header identity from an auth proxy, e.g. X-Auth-Request-User",
    ),
    (
        "TRUSTED_PROXIES",
        "unset",
        "CIDRs whose USER_HEADER / X-Forwarded-Proto are believed; required with USER_HEADER",
    ),
    (
        "ALLOWED_ORIGINS",
        "unset",
        "CORS allow-list of http(s)://host[:port] origins",
    ),
    ("MAX_BODY_BYTES", "1048576", "JSON body limit (413)"),
    (
        "MAX_UPLOAD_BYTES",
        "15728640",
        "upload limit, enforced while streaming (413)",
    ),
    (
        "RATE_LIMIT_PER_MINUTE",
        "60",
        "POST /chat per identity per minute (429); 0 disables",
    ),
    (
        "MAX_STREAMS_PER_IDENTITY",
        "4",
        "open generations per identity (429)",
    ),
    (
        "MAX_CONCURRENT_STREAMS",
        "10000",
        "open streams in all (503)",
    ),
    (
        "UPSTREAM_CONNECT_TIMEOUT_SECS",
        "5",
        "connect timeout to Dify",
    ),
    (
        "UPSTREAM_TIMEOUT_SECS",
        "100",
        "whole non-streaming call; for a stream, the wait for Dify's headers (504)",
    ),
    (
        "STREAM_IDLE_TIMEOUT_SECS",
        "120",
        "no upstream byte this long ends a stream with upstream_timeout",
    ),
    (
        "REQUEST_HEADER_TIMEOUT_SECS",
        "30",
        "a request head must arrive within this",
    ),
    (
        "REQUEST_BODY_TIMEOUT_SECS",
        "30",
        "a request body that sends nothing this long gets 408",
    ),
    (
        "REQUEST_BODY_DEADLINE_SECS",
        "120",
        "a whole request body must arrive within this (408)",
    ),
    (
        "MAX_BUFFERED_BODY_BYTES",
        "67108864",
        "request body bytes all requests may hold in memory (503)",
    ),
    (
        "MAX_CONNECTIONS_PER_PEER",
        "256",
        "open connections per client address; 0 disables",
    ),
    (
        "MAX_CONCURRENT_UPSTREAM_CALLS",
        "1024",
        "non-streaming Dify calls in flight at once (503)",
    ),
    (
        "WORKER_THREADS",
        "one per CPU",
        "threads serving connections, each its own runtime",
    ),
    (
        "SHUTDOWN_GRACE_SECS",
        "25",
        "on SIGTERM, time open streams get to finish",
    ),
    (
        "REDIS_URL",
        "unset (state in process)",
        "redis:// or rediss://; limits, budgets and resumable streams shared by replicas",
    ),
    (
        "REDIS_CA_CERT_FILE",
        "unset (the system's CAs)",
        "PEM file of the private CA that signed a rediss:// server's certificate",
    ),
    (
        "TOKEN_BUDGET_PER_DAY",
        "0 (off)",
        "tokens per identity per UTC day (429 budget_exceeded)",
    ),
    (
        "STREAM_RESUME_SECS",
        "300",
        "how long a stream's bytes stay resumable after it ends",
    ),
    (
        "STREAM_RESUME_MAX_BYTES",
        "1048576",
        "bytes kept per stream for resuming",
    ),
    (
        "STREAM_RESUME_GRACE_SECS",
        "10",
        "after the browser leaves, how long before Dify's stop is called (0: at once)",
    ),
    (
        "EMBED_ORIGINS",
        "unset",
        "origins that may frame the page (embed.js); the cookie becomes SameSite=None",
    ),
    (
        "METRICS_ADDR",
        "unset (/metrics on the main port)",
        "serve /metrics on this ip:port instead",
    ),
    (
        "STATIC_DIR",
        "unset (embedded page)",
        "serve the page from this folder",
    ),
    (
        "LOG_FORMAT",
        "pretty",
        "pretty or json; RUST_LOG sets levels",
    ),
];

/// The `--help` text after the flags: every variable with its default.
pub fn help() -> String {
    let width = VARIABLES
        .iter()
        .map(|(name, ..)| name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "Environment variables (a .env file is read too; the real environment wins):\n",
    );
    for (name, default, meaning) in VARIABLES {
        text.push_str(&format!(
            "  {name:<width$}  {meaning} [default: {default}]\n"
        ));
    }
    text.push_str("\nA bad value stops start-up with one line naming the variable, exit code 2.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_the_configuration_reads_is_listed() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("shared.rs"),
            include_str!("embed.rs"),
        ];
        for read in sources.iter().flat_map(|s| s.split("get(\"").skip(1)) {
            let name = read.split('"').next().unwrap_or_default();
            assert!(
                VARIABLES.iter().any(|(listed, ..)| *listed == name),
                "{name} is read but missing from config::vars::VARIABLES (and so from --help)"
            );
        }
    }

    #[test]
    fn every_listed_variable_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        for (name, ..) in VARIABLES {
            assert!(
                readme.contains(&format!("| `{name}`")) || readme.contains(&format!("/ `{name}`")),
                "{name} is missing from the README's configuration table"
            );
        }
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help();
        assert!(help.contains("DIFY_API_KEY"));
        assert!(help.contains("[default: 3000]"));
        assert_eq!(help.lines().count(), VARIABLES.len() + 3);
    }
}
