//! Hardening (issue 4): trusted-header identity, CORS, CSRF, rate and stream limits, slow
//! clients, upstream retries, and abuse. Every refused request gets our JSON error and never
//! reaches Dify; no response or log line ever shows the key or the session secret.


use std::time::{Duration, Instant};

use crate::support::{TestApp, TestResponse, Vars, assert_no_secret, read_stream};
use dify_emulator::{EmulatorOptions, Reply, Step};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER_HEADER: &str = "X-Forwarded-User";
const CONVERSATION: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";
const MESSAGE: &str = "f3e2cd8a-f1d4-4370-b648-12d5e59a88e3";
const EVIL: &str = "https://evil.example";
const FRIEND: &str = "https://app.example";

fn vars(pairs: &[(&'static str, &str)]) -> Vars {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

async fn header_mode(extra: &[(&'static str, &str)]) -> TestApp {
    let mut all = vars(&[("USER_HEADER", USER_HEADER)]);
    all.extend(vars(extra));
    TestApp::spawn_with_env(all).await
}

fn blocking(query: &str) -> Value {
    json!({"query": query, "response_mode": "blocking"})
}

fn assert_nothing_reached_dify(app: &TestApp) {
    let received = app.emulator.requests();
    assert!(
        received.is_empty(),
        "Dify received {:?}",
        received
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

fn own_origin(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client, for what reqwest will not send (`..` in paths, bare CR, slow bodies).

#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn parse(bytes: &[u8]) -> Raw {
        assert_no_secret("a raw response", bytes);
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut body = bytes[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Raw { status, head, body }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.head);
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "errors are JSON: {}",
            self.head
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Reads until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    all
}

/// Sends these exact bytes on a fresh connection and reads the whole answer.
async fn raw_bytes(app: &TestApp, request: &[u8]) -> Raw {
    let mut stream = connect(app).await;
    stream.write_all(request).await.expect("write");
    Raw::parse(&read_to_close(&mut stream).await)
}

/// `METHOD target HTTP/1.1` with our Host, `Connection: close` and these extra header lines.
async fn raw(app: &TestApp, method: &str, target: &str, headers: &str) -> Raw {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}\r\n",
        app.addr
    );
    raw_bytes(app, request.as_bytes()).await
}

// ---------------------------------------------------------------------------------------------
// Trusted-header identity

#[tokio::test]
async fn header_mode_makes_the_header_value_the_dify_user() {
    let app = header_mode(&[]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, "alice@example.com"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/conversations");
    assert_eq!(sent[0].user().as_deref(), Some("alice@example.com"));
}

#[tokio::test]
async fn header_mode_without_the_header_is_401_and_reaches_no_upstream() {
    let app = header_mode(&[]).await;
    app.browser
        .get("/conversations")
        .await
        .assert_error(401, "unauthorized");
    app.browser
        .chat(&blocking("hi"))
        .await
        .assert_error(401, "unauthorized");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_accepts_1_to_256_printable_characters() {
    let app = header_mode(&[]).await;
    let max_ascii = "a".repeat(256);
    let max_unicode = "é".repeat(256);
    for user in [
        "x",
        max_ascii.as_str(),
        max_unicode.as_str(),
        "Jane Doe (SSO)",
    ] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, "/conversations")
                    .header(USER_HEADER, user),
            )
            .await;
        assert_eq!(
            res.status,
            200,
            "{} chars: {}",
            user.chars().count(),
            res.text()
        );
    }
    let users: Vec<String> = app
        .upstream_requests("/v1/conversations")
        .iter()
        .filter_map(|r| r.user())
        .collect();
    assert_eq!(users[2], max_unicode);
}

#[tokio::test]
async fn header_mode_refuses_over_long_unprintable_or_non_utf8_identities() {
    let app = header_mode(&[]).await;
    let too_long = "a".repeat(257);
    let bad: [&[u8]; 3] = [too_long.as_bytes(), b"alice\tbob", b"\xff\xfe alice"];
    for value in bad {
        let header = reqwest::header::HeaderValue::from_bytes(value).expect("a header value");
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, "/conversations")
                    .header(USER_HEADER, header),
            )
            .await;
        res.assert_error(401, "unauthorized");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_refuses_a_repeated_identity_header() {
    let app = header_mode(&[]).await;
    let res = raw(
        &app,
        "GET",
        "/conversations",
        &format!("{USER_HEADER}: alice\r\n{USER_HEADER}: bob\r\n"),
    )
    .await;
    res.assert_error(401, "unauthorized");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_issues_no_cookie() {
    let app = header_mode(&[]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, "alice"),
        )
        .await;
    assert_eq!(res.status, 200);
    assert!(res.header("set-cookie").is_none(), "{:?}", res.headers);
    let refused = app.browser.get("/conversations").await;
    assert!(refused.header("set-cookie").is_none());
}

#[tokio::test]
async fn header_mode_refuses_every_request_from_an_untrusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    for (method, path) in [
        (Method::GET, "/conversations"),
        (Method::GET, "/parameters"),
        (Method::POST, "/chat"),
    ] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(method, path)
                    .header(USER_HEADER, "alice")
                    .json(&blocking("hi")),
            )
            .await;
        res.assert_error(401, "unauthorized");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn header_mode_believes_a_trusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.0/8")]).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header(USER_HEADER, "alice")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/chat-messages");
    assert_eq!(sent[0].user().as_deref(), Some("alice"));
}

#[tokio::test]
async fn header_mode_answers_no_preflight_from_an_untrusted_peer() {
    let app = header_mode(&[
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ("ALLOWED_ORIGINS", FRIEND),
    ])
    .await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    res.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn header_mode_probes_still_answer_an_untrusted_peer() {
    let app = header_mode(&[("TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    assert_eq!(app.browser.get("/healthz").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// CORS

fn preflight(app: &TestApp, origin: &str) -> reqwest::RequestBuilder {
    app.browser
        .request(Method::OPTIONS, "/chat")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
}

fn assert_no_allow_headers(res: &TestResponse) {
    let allow: Vec<&str> = res
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-allow"))
        .collect();
    assert!(allow.is_empty(), "unexpected CORS headers: {allow:?}");
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let app = TestApp::spawn().await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    assert_no_allow_headers(&res);
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("origin", FRIEND),
        )
        .await;
    assert_no_allow_headers(&res);
}

#[tokio::test]
async fn cors_preflight_from_an_allowed_origin_gets_origin_credentials_methods_and_headers() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    assert!(res.status.is_success(), "{}", res.status);
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    let methods = res
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    for method in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("x-request-id"),
        "{headers}"
    );
    assert!(
        res.header("access-control-max-age")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|secs| secs > 0),
        "preflights are cached"
    );
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn cors_actual_request_from_an_allowed_origin_gets_origin_and_credentials() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert!(
        res.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin"))
    );
}

#[tokio::test]
async fn cors_error_answers_to_an_allowed_origin_are_readable_by_it() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .json(&json!({"query": ""})),
        )
        .await;
    res.assert_error(400, "invalid_param");
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
}

#[tokio::test]
async fn cors_another_origin_gets_no_allow_headers_even_with_a_list() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app.browser.send(preflight(&app, EVIL)).await;
    assert_no_allow_headers(&res);
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("origin", EVIL),
        )
        .await;
    assert_no_allow_headers(&res);
    // A look-alike of an allowed origin is another origin.
    for lookalike in [
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:8443",
    ] {
        assert_no_allow_headers(&app.browser.send(preflight(&app, lookalike)).await);
    }
}

// ---------------------------------------------------------------------------------------------
// CSRF

/// Every state-changing route, with a request that would reach Dify if it were not refused.
fn state_changing(app: &TestApp) -> Vec<reqwest::RequestBuilder> {
    let b = &app.browser;
    let upload = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec())
            .file_name("a.txt")
            .mime_str("text/plain")
            .expect("mime"),
    );
    vec![
        b.request(Method::POST, "/chat").json(&blocking("hi")),
        b.request(
            Method::POST,
            "/chat/f02dec3c-358c-4b01-9451-860821071dba/stop",
        )
        .json(&json!({})),
        b.request(Method::DELETE, &format!("/conversations/{CONVERSATION}"))
            .json(&json!({})),
        b.request(Method::POST, &format!("/conversations/{CONVERSATION}/name"))
            .json(&json!({"name": "x"})),
        b.request(Method::POST, &format!("/messages/{MESSAGE}/feedbacks"))
            .json(&json!({"rating": "like"})),
        b.request(Method::POST, "/files/upload").multipart(upload),
    ]
}

async fn assert_all_forbidden(
    app: &TestApp,
    add: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) {
    for request in state_changing(app) {
        let res = app.browser.send(add(request)).await;
        res.assert_error(403, "forbidden");
        assert!(
            res.header("set-cookie").is_none(),
            "refused before an identity is made"
        );
    }
    assert_nothing_reached_dify(app);
}

#[tokio::test]
async fn csrf_a_foreign_origin_is_403_on_every_state_changing_route() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("origin", EVIL)).await;
}

#[tokio::test]
async fn csrf_origin_null_is_403() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("origin", "null")).await;
}

#[tokio::test]
async fn csrf_sec_fetch_site_cross_site_without_origin_is_403() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("sec-fetch-site", "cross-site")).await;
}

#[tokio::test]
async fn csrf_a_foreign_origin_is_403_even_with_sec_fetch_site_same_origin() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| {
        r.header("origin", EVIL)
            .header("sec-fetch-site", "same-origin")
    })
    .await;
}

#[tokio::test]
async fn csrf_the_proxys_own_origin_passes() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", own_origin(&app))
                .header("sec-fetch-site", "same-origin")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn csrf_an_allow_listed_origin_passes() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .header("sec-fetch-site", "cross-site")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn csrf_requests_with_neither_origin_nor_sec_fetch_site_pass() {
    let app = TestApp::spawn().await;
    let answer = app.browser.chat_blocking("from curl", "").await;
    let conversation = answer["conversation_id"].as_str().unwrap_or_default();
    let res = app
        .browser
        .delete(&format!("/conversations/{conversation}"))
        .await;
    assert!(res.status.is_success(), "{}", res.text());
}

#[tokio::test]
async fn csrf_same_site_fetch_without_origin_passes() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("sec-fetch-site", "same-site")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

async fn post_with_forwarded_https(app: &TestApp, origin: &str) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", origin)
                .header("x-forwarded-proto", "https")
                .json(&blocking("hi")),
        )
        .await
}

#[tokio::test]
async fn csrf_forwarded_https_makes_the_own_origin_https_when_any_peer_is_believed() {
    let app = TestApp::spawn().await;
    let https = format!("https://{}", app.addr);
    assert_eq!(post_with_forwarded_https(&app, &https).await.status, 200);
    post_with_forwarded_https(&app, &own_origin(&app))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn csrf_forwarded_https_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn_with_env(vars(&[("TRUSTED_PROXIES", "10.0.0.0/8")])).await;
    let https = format!("https://{}", app.addr);
    post_with_forwarded_https(&app, &https)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        post_with_forwarded_https(&app, &own_origin(&app))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn csrf_forwarded_https_from_a_trusted_peer_is_believed() {
    let app = TestApp::spawn_with_env(vars(&[("TRUSTED_PROXIES", "127.0.0.0/8")])).await;
    let https = format!("https://{}", app.addr);
    assert_eq!(post_with_forwarded_https(&app, &https).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Rate and stream limits

fn retry_after(res: &TestResponse) -> u64 {
    res.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a numeric Retry-After: {:?}", res.headers))
}

#[tokio::test]
async fn rate_limit_the_third_chat_in_a_minute_is_429_with_retry_after() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..2 {
        assert_eq!(app.browser.chat(&blocking("hi")).await.status, 200);
    }
    let res = app.browser.chat(&blocking("hi")).await;
    res.assert_error(429, "rate_limited");
    assert!((1..=60).contains(&retry_after(&res)));
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 2);
}

#[tokio::test]
async fn rate_limit_is_counted_per_identity() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "1")])).await;
    let alice = app.new_browser();
    let bob = app.new_browser();
    assert_eq!(alice.chat(&blocking("hi")).await.status, 200);
    alice
        .chat(&blocking("again"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(bob.chat(&blocking("hi")).await.status, 200);
}

#[tokio::test]
async fn rate_limit_applies_to_post_chat_only() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "1")])).await;
    assert_eq!(app.browser.chat(&blocking("hi")).await.status, 200);
    for _ in 0..5 {
        assert_eq!(app.browser.get("/conversations").await.status, 200);
    }
}

async fn slow_app(extra: &[(&'static str, &str)]) -> TestApp {
    TestApp::spawn_with(
        vars(extra),
        EmulatorOptions {
            slow_interval: Duration::from_millis(500),
            ..EmulatorOptions::default()
        },
    )
    .await
}

async fn open_slow_stream(browser: &crate::support::Browser) -> reqwest::Response {
    let response = browser.chat_stream(&json!({"query": "SLOW please"})).await;
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test]
async fn streams_per_identity_over_the_limit_are_429_with_retry_after() {
    let app = slow_app(&[("MAX_STREAMS_PER_IDENTITY", "2")]).await;
    let _held = [
        open_slow_stream(&app.browser).await,
        open_slow_stream(&app.browser).await,
    ];
    let res = app.browser.chat(&json!({"query": "SLOW please"})).await;
    res.assert_error(429, "rate_limited");
    assert!(retry_after(&res) >= 1);
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 2);
    let other = app.new_browser();
    let _theirs = open_slow_stream(&other).await;
}

#[tokio::test]
async fn a_closed_stream_frees_its_place() {
    let app = slow_app(&[("MAX_STREAMS_PER_IDENTITY", "1")]).await;
    let first = open_slow_stream(&app.browser).await;
    app.browser
        .chat(&json!({"query": "SLOW please"}))
        .await
        .assert_error(429, "rate_limited");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = app.browser.chat_stream(&json!({"query": "SLOW"})).await;
        if response.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streams_over_the_global_limit_are_503_overloaded_with_retry_after() {
    let app = slow_app(&[("MAX_CONCURRENT_STREAMS", "2")]).await;
    let _held = [
        open_slow_stream(&app.new_browser()).await,
        open_slow_stream(&app.new_browser()).await,
    ];
    let res = app
        .new_browser()
        .chat(&json!({"query": "SLOW please"}))
        .await;
    res.assert_error(503, "overloaded");
    assert!(retry_after(&res) >= 1);
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Slow and huge requests (slowloris)

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_after_the_header_timeout() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_HEADER_TIMEOUT_SECS", "1")])).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    let answer = read_to_close(&mut stream).await;
    let waited = started.elapsed();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_HEADER_TIMEOUT_SECS", "1")])).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_HEADER_TIMEOUT_SECS", "1")])).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Sends a request whose body then stops short, and asserts the prompt 408 that follows.
async fn assert_stalled_body_is_408(app: &TestApp, request_start: &str) {
    let mut stream = connect(app).await;
    stream
        .write_all(request_start.as_bytes())
        .await
        .expect("write");
    let started = Instant::now();
    let res = Raw::parse(&read_to_close(&mut stream).await);
    res.assert_error(408, "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stalled_request_body_is_408_and_reaches_no_upstream() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_BODY_TIMEOUT_SECS", "1")])).await;
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"query\": ",
        app.addr
    );
    assert_stalled_body_is_408(&app, &head).await;
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn an_upload_whose_body_stalls_mid_file_is_408() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_BODY_TIMEOUT_SECS", "1")])).await;
    let part = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n0123456789";
    let head = format!(
        "POST /files/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{part}",
        app.addr
    );
    assert_stalled_body_is_408(&app, &head).await;
}

#[tokio::test]
async fn a_slow_but_steady_request_body_is_not_cut() {
    let app = TestApp::spawn_with_env(vars(&[("REQUEST_BODY_TIMEOUT_SECS", "1")])).await;
    let body = serde_json::to_vec(&blocking("slowly typed")).expect("json");
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // 1.6 s in all, but never more than 0.4 s between pieces.
    for piece in body.chunks(body.len().div_ceil(4)) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(piece).await.expect("write");
    }
    let res = Raw::parse(&read_to_close(&mut stream).await);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_cut_and_frees_its_place() {
    let app = TestApp::spawn_with_env(vars(&[
        ("STREAM_IDLE_TIMEOUT_SECS", "1"),
        ("MAX_STREAMS_PER_IDENTITY", "1"),
    ]))
    .await;
    // Far more than the socket buffers between the proxy and a client that reads nothing.
    let event = format!(
        "data: {{\"event\": \"message\", \"answer\": \"{}\"}}\n\n",
        "x".repeat(64 * 1024)
    );
    let chunks = vec![bytes::Bytes::from(event); 512];
    app.emulator
        .script("POST", "/chat-messages", Reply::sse(chunks));
    let mut stalled = app.browser.chat_stream(&json!({"query": "big"})).await;
    assert_eq!(stalled.status(), 200);
    assert!(stalled.chunk().await.ok().flatten().is_some());

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let next = app.browser.chat_stream(&json!({"query": "hi"})).await;
        if next.status() == 200 {
            break;
        }
        assert_eq!(next.status(), 429, "only the stream limit refuses it");
        assert!(
            Instant::now() < deadline,
            "the stalled stream still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(stalled);
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431_and_reaches_no_upstream() {
    let app = TestApp::spawn().await;
    let huge = "a".repeat(40 * 1024);
    let res = raw(
        &app,
        "GET",
        "/conversations",
        &format!("Cookie: x={huge}\r\n"),
    )
    .await;
    assert_eq!(res.status, 431, "{}", res.head);
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_very_long_query_string_is_414_json_and_reaches_no_upstream() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(9 * 1024);
    for path in [
        format!("/conversations?junk={long}"),
        format!("/messages?conversation_id={CONVERSATION}&x={long}"),
        format!("/{long}"),
    ] {
        app.browser
            .get(&path)
            .await
            .assert_error(414, "uri_too_long");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_long_but_invalid_query_value_is_400() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(4 * 1024);
    for path in [
        format!("/conversations?last_id={long}"),
        format!("/conversations?sort_by={long}"),
        format!("/conversations?limit={long}"),
        format!("/messages?conversation_id={long}"),
    ] {
        app.browser
            .get(&path)
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Bodies

#[tokio::test]
async fn an_oversized_json_body_is_413_with_or_without_a_length() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_BODY_BYTES", "1024")])).await;
    let big = json!({"query": "x".repeat(2048), "response_mode": "blocking"});
    app.browser
        .chat(&big)
        .await
        .assert_error(413, "payload_too_large");
    let bytes = serde_json::to_vec(&big).expect("json");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                ))),
        )
        .await;
    res.assert_error(413, "payload_too_large");
    assert_nothing_reached_dify(&app);
}

async fn post_raw_json(app: &TestApp, path: &str, body: &'static [u8]) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

fn json_routes() -> Vec<String> {
    vec![
        "/chat".into(),
        format!("/conversations/{CONVERSATION}/name"),
        format!("/messages/{MESSAGE}/feedbacks"),
    ]
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        for body in [
            &b"{\"query\": "[..],
            b"{'query': 'hi'}",
            b"",
            b"{\"query\": \"hi\"} trailing",
        ] {
            post_raw_json(&app, &path, body)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn invalid_utf8_in_a_json_body_is_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        post_raw_json(
            &app,
            &path,
            b"{\"query\": \"\xff\xfe\", \"name\": \"\xc3\"}",
        )
        .await
        .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn json_bodies_that_are_not_objects_are_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        for body in [
            &b"[]"[..],
            b"\"x\"",
            b"null",
            b"5",
            b"[{\"query\": \"hi\"}]",
        ] {
            post_raw_json(&app, &path, body)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn wrong_content_types_on_json_routes_are_415() {
    let app = TestApp::spawn().await;
    let mut routes = json_routes();
    routes.push("/chat/f02dec3c-358c-4b01-9451-860821071dba/stop".into());
    for path in routes {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/jsonp",
            "text/json",
        ] {
            let res = app
                .browser
                .send(
                    app.browser
                        .request(Method::POST, &path)
                        .header("content-type", content_type)
                        .body(r#"{"query": "hi", "name": "x", "rating": "like"}"#),
                )
                .await;
            res.assert_error(415, "unsupported_media_type");
        }
    }
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::DELETE, &format!("/conversations/{CONVERSATION}"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    res.assert_error(415, "unsupported_media_type");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_json_body_without_a_content_type_is_415() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .body(r#"{"query": "hi"}"#),
        )
        .await;
    res.assert_error(415, "unsupported_media_type");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn an_upload_that_is_not_multipart_is_415() {
    let app = TestApp::spawn().await;
    for content_type in ["application/json", "text/plain", "application/octet-stream"] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::POST, "/files/upload")
                    .header("content-type", content_type)
                    .body("{}"),
            )
            .await;
        res.assert_error(415, "unsupported_media_type");
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Ids and query parameters

const BAD_IDS: &[&str] = &[
    "not-a-uuid",
    "aa0483dbe11440abb70fc2128bd443fa",
    "%7Baa0483db-e114-40ab-b70f-c2128bd443fa%7D",
    "aa0483db-e114-40ab-b70f-c2128bd443fa%0D%0AX-Injected:%201",
    "aa0483db-e114-40ab-b70f-c2128bd443f%0A",
    "%2E%2E%2F%2E%2E%2Fv1%2Finfo",
    "..%2F..%2Fv1%2Finfo",
    "aa0483db-e114-40ab-b70f-c2128bd443fa%00",
    "%20aa0483db-e114-40ab-b70f-c2128bd443fa",
];

#[tokio::test]
async fn non_uuid_ids_in_paths_are_400() {
    let app = TestApp::spawn().await;
    for id in BAD_IDS {
        let b = &app.browser;
        let requests = [
            b.request(Method::DELETE, &format!("/conversations/{id}"))
                .json(&json!({})),
            b.request(Method::POST, &format!("/conversations/{id}/name"))
                .json(&json!({"name": "x"})),
            b.request(Method::POST, &format!("/messages/{id}/feedbacks"))
                .json(&json!({"rating": "like"})),
            b.request(Method::GET, &format!("/messages/{id}/suggested")),
        ];
        for request in requests {
            b.send(request).await.assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn non_uuid_ids_in_query_parameters_are_400() {
    let app = TestApp::spawn().await;
    for id in BAD_IDS {
        for path in [
            format!("/conversations?last_id={id}"),
            format!("/messages?conversation_id={id}"),
            format!("/messages?conversation_id={CONVERSATION}&first_id={id}"),
        ] {
            app.browser
                .get(&path)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn non_uuid_ids_in_chat_bodies_are_400() {
    let app = TestApp::spawn().await;
    for id in [
        "not-a-uuid",
        "aa0483db-e114-40ab-b70f-c2128bd443fa\r\nX-Injected: 1",
        "../../v1/info",
        "aa0483dbe11440abb70fc2128bd443fa",
    ] {
        app.browser
            .chat(&json!({"query": "hi", "conversation_id": id}))
            .await
            .assert_error(400, "invalid_param");
        let file = json!({"type": "image", "transfer_method": "local_file", "upload_file_id": id});
        app.browser
            .chat(&json!({"query": "hi", "files": [file]}))
            .await
            .assert_error(400, "invalid_param");
    }
    app.browser
        .chat(&json!({"query": "hi", "conversation_id": 5}))
        .await
        .assert_error(400, "invalid_param");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn bad_task_ids_are_400() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(65);
    for task in [
        "a_b",
        "abc%0D%0AX-Injected:%201",
        "%2E%2E%2Finfo",
        "t%20id",
        too_long.as_str(),
    ] {
        app.browser
            .post_json(&format!("/chat/{task}/stop"), &json!({}))
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn crlf_in_query_parameters_is_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/conversations?sort_by=created_at%0D%0AX-Injected:%201".to_owned(),
        "/conversations?limit=20%0D%0A".to_owned(),
        "/conversations?limit=%0A20".to_owned(),
        format!("/conversations?last_id={CONVERSATION}%0D%0A"),
        format!("/messages?conversation_id={CONVERSATION}%0D%0AX-Injected:%201"),
        format!("/messages?conversation_id={CONVERSATION}&limit=1%0D%0A"),
    ] {
        app.browser
            .get(&path)
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn raw_cr_or_lf_in_the_request_line_or_a_header_is_refused() {
    let app = TestApp::spawn_with_env(vars(&[("USER_HEADER", USER_HEADER)])).await;
    for request in [
        format!(
            "GET /conversations?limit=1\rX-Injected: 1 HTTP/1.1\r\nHost: {}\r\n{USER_HEADER}: a\r\n\r\n",
            app.addr
        ),
        format!(
            "GET /conversations HTTP/1.1\r\nHost: {}\r\n{USER_HEADER}: alice\rX-Injected: 1\r\n\r\n",
            app.addr
        ),
    ] {
        let res = raw_bytes(&app, request.as_bytes()).await;
        assert_eq!(res.status, 400, "{}", res.head);
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Path traversal

const TRAVERSALS: &[&str] = &[
    "/../Cargo.toml",
    "/%2e%2e/Cargo.toml",
    "/%2E%2E/Cargo.toml",
    "/..%2fCargo.toml",
    "/%2e%2e%2fCargo.toml",
    "/js/../../src/main.rs",
    "/js/..%2f..%2fsrc%2fmain.rs",
    "/./../Cargo.toml",
    "/..%5cCargo.toml",
    "//../Cargo.toml",
    "/static/../../Cargo.toml",
];

fn assert_not_leaked(res: &Raw, target: &str) {
    let body = String::from_utf8_lossy(&res.body);
    assert!(
        !body.contains("[package]") && !body.contains("fn main"),
        "{target} leaked a file"
    );
}

async fn assert_traversals_refused(app: &TestApp) {
    for target in TRAVERSALS {
        let res = raw(app, "GET", target, "").await;
        assert_not_leaked(&res, target);
        res.assert_error(404, "not_found");
    }
    assert_nothing_reached_dify(app);
}

#[tokio::test]
async fn path_traversal_on_the_embedded_page_is_404() {
    let app = TestApp::spawn().await;
    assert_traversals_refused(&app).await;
}

async fn assert_writes_to_page_paths_are_405(app: &TestApp) {
    for (method, path) in [
        (Method::POST, "/"),
        (Method::DELETE, "/"),
        (Method::PUT, "/index.html"),
    ] {
        let res = app.browser.send(app.browser.request(method, path)).await;
        res.assert_error(405, "method_not_allowed");
        assert_eq!(res.header("allow"), Some("GET,HEAD"), "{path}");
    }
    let res = app
        .browser
        .send(app.browser.request(Method::POST, "/no-such-page.html"))
        .await;
    res.assert_error(404, "not_found");
}

#[tokio::test]
async fn another_method_on_an_embedded_page_path_is_405_with_allow() {
    let app = TestApp::spawn().await;
    assert_writes_to_page_paths_are_405(&app).await;
}

#[tokio::test]
async fn another_method_on_a_static_dir_page_path_is_405_with_allow() {
    let dir = format!("{}/static", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with_env(vec![("STATIC_DIR", dir)]).await;
    assert_writes_to_page_paths_are_405(&app).await;
}

#[tokio::test]
async fn path_traversal_on_a_static_dir_is_404() {
    let dir = format!("{}/static", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with_env(vec![("STATIC_DIR", dir)]).await;
    assert_traversals_refused(&app).await;
}

#[tokio::test]
async fn path_traversal_on_the_file_passthrough_is_404() {
    let app = TestApp::spawn().await;
    for target in [
        "/files/../v1/info".to_owned(),
        "/files/..%2fv1%2finfo/file-preview".to_owned(),
        "/files/%2e%2e/file-preview?timestamp=1&nonce=a&sign=b".to_owned(),
        format!("/files/{CONVERSATION}/..%2f..%2fv1%2finfo"),
        format!("/files/{CONVERSATION}/file-preview/../../../v1/info"),
        format!("/files/{CONVERSATION}%2f..%2f..%2fv1%2finfo/file-preview"),
        "/files/tools/..%2f..%2fv1%2finfo.png".to_owned(),
        "/files/tools/../../v1/info".to_owned(),
        format!("/files/tools/{CONVERSATION}.png%2f..%2f..%2finfo"),
        format!("/files/tools/{CONVERSATION}.p%2e%2e"),
    ] {
        let res = raw(&app, "GET", &target, "").await;
        assert_not_leaked(&res, &target);
        res.assert_error(404, "not_found");
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Forged identities

/// A `dify_bff_uid` cookie carrying `id`, signed with a key made from `secret` as the proxy does.
fn signed_cookie(id: &str, secret: &str) -> String {
    use sha2::{Digest, Sha512};
    let key = cookie::Key::from(&Sha512::digest(secret.as_bytes()));
    let mut jar = cookie::CookieJar::new();
    jar.signed_mut(&key)
        .add(cookie::Cookie::new("dify_bff_uid", id.to_owned()));
    let value = jar
        .get("dify_bff_uid")
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    format!("dify_bff_uid={value}")
}

#[tokio::test]
async fn a_cookie_not_signed_with_our_secret_never_maps_to_the_id_it_names() {
    let app = TestApp::spawn().await;
    app.browser.chat_blocking("the victim's chat", "").await;
    let victim = app.upstream_requests("/v1/chat-messages")[0]
        .user()
        .unwrap_or_default();

    // The harness secret really is what signs our cookies: a cookie made with it is accepted.
    let genuine = signed_cookie(&victim, crate::support::SESSION_SECRET);
    let res = app
        .browser
        .send(
            reqwest::Client::new()
                .get(app.browser.url("/conversations"))
                .header("cookie", genuine),
        )
        .await;
    assert!(res.header("set-cookie").is_none());
    assert_eq!(res.json()["data"].as_array().map(Vec::len), Some(1));

    for forged in [
        signed_cookie(&victim, "another-secret-of-at-least-thirty-two-bytes!!"),
        format!("dify_bff_uid={victim}"),
        signed_cookie(&victim, "").replace("dify_bff_uid=", "dify_bff_uid=AAAA"),
    ] {
        let res = app
            .browser
            .send(
                reqwest::Client::new()
                    .get(app.browser.url("/conversations"))
                    .header("cookie", forged),
            )
            .await;
        assert_eq!(res.status, 200);
        assert!(res.header("set-cookie").is_some(), "a fresh identity");
        assert_eq!(
            res.json()["data"].as_array().map(Vec::len),
            Some(0),
            "nothing of the victim's"
        );
        let sent = app.upstream_requests("/v1/conversations");
        assert_ne!(sent.last().and_then(|r| r.user()), Some(victim.clone()));
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream retries

fn dify_503() -> Reply {
    Reply::json(
        503,
        &json!({"code": "unavailable", "message": "Service Unavailable", "status": 503}),
    )
}

#[tokio::test]
async fn an_idempotent_get_is_retried_after_a_503() {
    let app = TestApp::spawn().await;
    app.emulator.script("GET", "/conversations", dify_503());
    let res = app.browser.get("/conversations").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(app.upstream_requests("/v1/conversations").len(), 2);
}

#[tokio::test]
async fn an_idempotent_get_is_retried_after_a_502_html_page() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "GET",
        "/parameters",
        Reply::html(502, "<html><body>Bad Gateway</body></html>"),
    );
    let res = app.browser.get("/parameters").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(app.upstream_requests("/v1/parameters").len(), 2);
}

#[tokio::test]
async fn an_idempotent_get_is_retried_at_most_twice() {
    let app = TestApp::spawn().await;
    for _ in 0..4 {
        app.emulator.script("GET", "/conversations", dify_503());
    }
    let res = app.browser.get("/conversations").await;
    res.assert_error(503, "unavailable");
    assert_eq!(app.upstream_requests("/v1/conversations").len(), 3);
}

#[tokio::test]
async fn a_get_is_not_retried_after_other_errors() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "GET",
        "/conversations",
        Reply::json(
            500,
            &json!({"code": "unknown", "message": "Internal Server Error", "status": 500}),
        ),
    );
    app.browser
        .get("/conversations")
        .await
        .assert_error(500, "unknown");
    assert_eq!(app.upstream_requests("/v1/conversations").len(), 1);
}

#[tokio::test]
async fn get_retries_never_run_past_the_upstream_timeout() {
    let app = TestApp::spawn_with_env(vars(&[("UPSTREAM_TIMEOUT_SECS", "1")])).await;
    assert_eq!(
        app.browser.get("/conversations").await.status,
        200,
        "warm-up"
    );
    app.emulator.clear_requests();
    for _ in 0..3 {
        let mut slow = dify_503();
        slow.steps
            .insert(0, Step::Pause(Duration::from_millis(600)));
        app.emulator.script("GET", "/conversations", slow);
    }
    let started = Instant::now();
    let res = app.browser.get("/conversations").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert!(
        res.status == 503 || res.status == 504,
        "{} {}",
        res.status,
        res.text()
    );
    assert!(app.upstream_requests("/v1/conversations").len() <= 2);
}

#[tokio::test]
async fn post_chat_is_never_retried() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::html(502, "<html>Bad Gateway</html>"),
    );
    app.browser
        .chat(&blocking("once"))
        .await
        .assert_error(502, "upstream_unavailable");
    app.emulator.script("POST", "/chat-messages", dify_503());
    let res = app.browser.chat(&json!({"query": "once, streaming"})).await;
    res.assert_error(503, "unavailable");
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 2);
}

#[tokio::test]
async fn a_stream_cut_by_dify_is_not_retried() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::sse(vec![bytes::Bytes::from_static(
            b"data: {\"event\": \"message\", \"task_id\": \"t1\", \"answer\": \"Hel",
        )])
        .then(Step::Drop),
    );
    let response = app.browser.chat_stream(&json!({"query": "hi"})).await;
    let body = read_stream(response).await;
    assert!(
        String::from_utf8_lossy(&body).contains("upstream_disconnected"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 1);
}
