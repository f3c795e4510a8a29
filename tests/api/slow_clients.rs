//! Slow clients (slowloris): a request head or body that never ends, an idle connection and a
//! client that stops reading a stream are cut after their timeouts and free their place; a slow
//! but steady body is not cut.

use std::time::{Duration, Instant};

use crate::support::raw::{Raw, connect, read_to_close};
use crate::support::{TestApp, assert_nothing_reached_dify, blocking, vars};
use dify_bff::Config;
use dify_emulator::{EmulatorOptions, Reply};
use serde_json::json;
use tokio::io::AsyncWriteExt;

// Short timeouts keep these tests fast: the environment sets whole seconds, so they are set on
// the parsed Config.
const HEADER_TIMEOUT: Duration = Duration::from_millis(200);
const BODY_TIMEOUT: Duration = Duration::from_millis(300);
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_millis(200);

async fn with_timeouts(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_with_config(vec![], EmulatorOptions::default(), adjust).await
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_after_the_header_timeout() {
    let app = with_timeouts(|c| c.request_header_timeout = HEADER_TIMEOUT).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        .await
        .expect("write");
    let answer = read_to_close(&mut stream).await;
    let waited = started.elapsed();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(waited >= HEADER_TIMEOUT * 9 / 10, "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = with_timeouts(|c| c.request_header_timeout = HEADER_TIMEOUT).await;
    let mut stream = connect(&app).await;
    let started = Instant::now();
    read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = with_timeouts(|c| c.request_header_timeout = HEADER_TIMEOUT).await;
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
    let app = with_timeouts(|c| c.request_body_timeout = BODY_TIMEOUT).await;
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"query\": ",
        app.addr
    );
    assert_stalled_body_is_408(&app, &head).await;
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn an_upload_whose_body_stalls_mid_file_is_408() {
    let app = with_timeouts(|c| c.request_body_timeout = BODY_TIMEOUT).await;
    let part = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n0123456789";
    let head = format!(
        "POST /files/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n{part}",
        app.addr
    );
    assert_stalled_body_is_408(&app, &head).await;
}

#[tokio::test]
async fn a_slow_but_steady_request_body_is_not_cut() {
    let app = with_timeouts(|c| c.request_body_timeout = BODY_TIMEOUT).await;
    let body = serde_json::to_vec(&blocking("slowly typed")).expect("json");
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // 400 ms in all, longer than the body timeout, but never more than 100 ms between pieces.
    for piece in body.chunks(body.len().div_ceil(4)) {
        tokio::time::sleep(BODY_TIMEOUT / 3).await;
        stream.write_all(piece).await.expect("write");
    }
    let res = Raw::parse(&read_to_close(&mut stream).await);
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_cut_and_frees_its_place() {
    let app = TestApp::spawn_with_config(
        vars(&[("MAX_STREAMS_PER_IDENTITY", "1")]),
        EmulatorOptions::default(),
        |c| c.stream_idle_timeout = STREAM_IDLE_TIMEOUT,
    )
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
}
