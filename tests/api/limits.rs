//! Limits: chats per identity per minute, open streams per identity and in all, and the size
//! of request heads, query strings and bodies. Every refusal is our JSON error (with
//! `Retry-After` where waiting helps) and never reaches Dify.

use std::time::{Duration, Instant};

use crate::support::raw::raw;
use crate::support::{TestApp, TestResponse, assert_nothing_reached_dify, blocking, vars};
use dify_emulator::EmulatorOptions;
use reqwest::Method;
use serde_json::json;

const CONVERSATION: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";

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
// Sizes

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
