//! Attacks from outside on the running server, each reproduced over real sockets against the
//! Dify emulator: token-spending routes without a limit, blocking chats beside the stream limit,
//! huge or endless upstream bodies, endless multipart heads, header and cookie identity tricks,
//! reversible log hashes, bodies that trickle forever, and a few page and request-head oddities.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::raw::{Raw, raw_bytes};
use crate::support::{
    Browser, TestApp, TestResponse, assert_nothing_reached_dify, blocking, logs, read_stream, vars,
};
use bytes::Bytes;
use dify_emulator::{EmulatorOptions, Reply, Step};
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER_HEADER: &str = "X-Forwarded-User";
const CONVERSATION: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";
const MESSAGE: &str = "f3e2cd8a-f1d4-4370-b648-12d5e59a88e3";
const TASK: &str = "f02dec3c-358c-4b01-9451-860821071dba";
const BOUNDARY: &str = "attack-boundary-5kQ2pZr";
const COOKIE: &str = "dify_bff_uid";
const HOST_COOKIE: &str = "__Host-dify_bff_uid";
const UPLOAD: &str = "/v1/files/upload";
const CHAT: &str = "/v1/chat-messages";

/// A 2x2 PNG the emulator accepts as an image upload.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a,
    0x73, 0x00, 0x00, 0x00, 0x10, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x44, 0x0c, 0x0c, 0x00, 0x1f, 0xf4, 0x03, 0xfd, 0x5f, 0xd6, 0xcd, 0x36, 0x00, 0x00, 0x00, 0x00,
    0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82, 0x00,
];

async fn header_mode() -> TestApp {
    TestApp::spawn_with_env(vars(&[
        ("USER_HEADER", USER_HEADER),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ]))
    .await
}

fn retry_after(res: &TestResponse) -> u64 {
    res.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a numeric Retry-After: {:?}", res.headers))
}

/// Asserts a 429 `rate_limited` with a usable `Retry-After`.
fn assert_rate_limited(res: &TestResponse) {
    res.assert_error(429, "rate_limited");
    assert!(retry_after(res) >= 1, "{:?}", res.headers);
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1, for what reqwest will not send (repeated Host, `//` paths, trickled bodies).

/// Values of a header in a raw response head, by case-insensitive name.
fn header_values(raw: &Raw, name: &str) -> Vec<String> {
    raw.head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// Reads until the server closes the connection (or resets it after answering), at most 15 s.
async fn read_answer<R: AsyncReadExt + Unpin>(reader: &mut R) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    all
}

// ---------------------------------------------------------------------------------------------
// 1. Token-spending routes have a rate limit of their own

fn multipart_png() -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"red.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(PNG);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(browser: &Browser, body: Vec<u8>) -> TestResponse {
    browser
        .send(
            browser
                .request(Method::POST, "/files/upload")
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body),
        )
        .await
}

async fn suggested(browser: &Browser) -> TestResponse {
    browser.get(&format!("/messages/{MESSAGE}/suggested")).await
}

fn suggested_path() -> String {
    format!("/v1/messages/{MESSAGE}/suggested")
}

async fn rename(browser: &Browser, body: &Value) -> TestResponse {
    browser
        .post_json(&format!("/conversations/{CONVERSATION}/name"), body)
        .await
}

fn rename_path() -> String {
    format!("/v1/conversations/{CONVERSATION}/name")
}

#[tokio::test]
async fn suggested_questions_over_the_limit_are_429_and_reach_no_upstream() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..2 {
        assert_ne!(suggested(&app.browser).await.status, 429);
    }
    assert_eq!(app.upstream_requests(&suggested_path()).len(), 2);
    assert_rate_limited(&suggested(&app.browser).await);
    assert_eq!(app.upstream_requests(&suggested_path()).len(), 2);
}

#[tokio::test]
async fn auto_generated_names_over_the_limit_are_429_and_reach_no_upstream() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    let auto = json!({"auto_generate": true});
    for _ in 0..2 {
        assert_ne!(rename(&app.browser, &auto).await.status, 429);
    }
    assert_eq!(app.upstream_requests(&rename_path()).len(), 2);
    assert_rate_limited(&rename(&app.browser, &auto).await);
    assert_eq!(app.upstream_requests(&rename_path()).len(), 2);
}

#[tokio::test]
async fn uploads_over_the_limit_are_429_and_reach_no_upstream() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..2 {
        let res = upload(&app.browser, multipart_png()).await;
        assert_eq!(res.status, 201, "{}", res.text());
    }
    assert_eq!(app.upstream_requests(UPLOAD).len(), 2);
    assert_rate_limited(&upload(&app.browser, multipart_png()).await);
    assert_eq!(app.upstream_requests(UPLOAD).len(), 2);
}

#[tokio::test]
async fn a_plain_rename_is_not_charged_to_the_token_spending_limit() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..4 {
        assert_ne!(
            rename(&app.browser, &json!({"name": "x"})).await.status,
            429
        );
    }
    // Both places are still free for model calls.
    for _ in 0..2 {
        assert_ne!(suggested(&app.browser).await.status, 429);
    }
    assert_eq!(app.upstream_requests(&rename_path()).len(), 4);
    assert_eq!(app.upstream_requests(&suggested_path()).len(), 2);
}

#[tokio::test]
async fn using_up_the_chat_limit_does_not_block_suggested_questions() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..2 {
        assert_eq!(app.browser.chat(&blocking("hi")).await.status, 200);
    }
    assert_rate_limited(&app.browser.chat(&blocking("hi")).await);
    for _ in 0..2 {
        assert_ne!(suggested(&app.browser).await.status, 429);
    }
    assert_eq!(app.upstream_requests(&suggested_path()).len(), 2);
}

#[tokio::test]
async fn using_up_the_suggested_questions_limit_does_not_block_chat() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    for _ in 0..2 {
        assert_ne!(suggested(&app.browser).await.status, 429);
    }
    assert_rate_limited(&suggested(&app.browser).await);
    for _ in 0..2 {
        let res = app.browser.chat(&blocking("hi")).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    assert_eq!(app.upstream_requests(CHAT).len(), 2);
}

#[tokio::test]
async fn the_token_spending_limit_is_counted_per_identity() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "1")])).await;
    let alice = app.new_browser();
    let bob = app.new_browser();
    assert_ne!(suggested(&alice).await.status, 429);
    assert_rate_limited(&suggested(&alice).await);
    assert_ne!(suggested(&bob).await.status, 429);
    assert_eq!(app.upstream_requests(&suggested_path()).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Blocking chats take a stream slot

fn slow_blocking_answer() -> Reply {
    let mut reply = Reply::json(
        200,
        &json!({
            "event": "message", "task_id": TASK, "id": MESSAGE, "message_id": MESSAGE,
            "conversation_id": CONVERSATION, "mode": "advanced-chat", "answer": "slow",
            "metadata": {}, "created_at": 1_795_662_501
        }),
    );
    reply
        .steps
        .insert(0, Step::Pause(Duration::from_millis(300)));
    reply
}

/// Gets the browser its identity cookie, so concurrent requests share one identity.
async fn settle_identity(app: &TestApp, browser: &Browser) {
    assert_eq!(browser.get("/conversations").await.status, 200);
    app.emulator.clear_requests();
}

#[tokio::test]
async fn concurrent_blocking_chats_beyond_the_stream_limit_are_429() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_STREAMS_PER_IDENTITY", "1")])).await;
    settle_identity(&app, &app.browser).await;
    app.emulator.script("POST", CHAT, slow_blocking_answer());
    let body = blocking("hi");
    let results = futures_util::future::join_all((0..4).map(|_| app.browser.chat(&body))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "exactly one runs: {results:?}");
    for refused in results.iter().filter(|r| r.status != 200) {
        assert_rate_limited(refused);
    }
    assert_eq!(app.upstream_requests(CHAT).len(), 1);
}

#[tokio::test]
async fn a_blocking_chat_while_a_stream_of_the_same_identity_is_open_is_429() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_STREAMS_PER_IDENTITY", "1")])).await;
    settle_identity(&app, &app.browser).await;
    let first = format!(
        "data: {{\"event\": \"message\", \"task_id\": \"{TASK}\", \"message_id\": \"{MESSAGE}\", \"conversation_id\": \"{CONVERSATION}\", \"answer\": \"hi\"}}\n\n"
    );
    app.emulator.script(
        "POST",
        CHAT,
        Reply::sse(vec![Bytes::from(first)]).then(Step::Hang),
    );
    let mut open = app
        .browser
        .chat_stream(&json!({"query": "stay open"}))
        .await;
    assert_eq!(open.status(), 200);
    assert!(open.chunk().await.expect("readable").is_some());
    assert_rate_limited(&app.browser.chat(&blocking("hi")).await);
    assert_eq!(app.upstream_requests(CHAT).len(), 1);
    drop(open);
}

#[tokio::test]
async fn a_blocking_chat_keeps_its_slot_until_dify_answers_even_when_the_browser_left() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_STREAMS_PER_IDENTITY", "1")])).await;
    settle_identity(&app, &app.browser).await;
    app.emulator.script("POST", CHAT, slow_blocking_answer());
    let left = app
        .browser
        .request(Method::POST, "/chat")
        .json(&blocking("leaving"))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(left.is_err(), "the browser gave up before Dify answered");
    assert_rate_limited(&app.browser.chat(&blocking("meanwhile")).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.emulator.script("POST", CHAT, slow_blocking_answer());
    assert_eq!(app.browser.chat(&blocking("after")).await.status, 200);
}

#[tokio::test]
async fn a_finished_blocking_chat_frees_its_stream_slot() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_STREAMS_PER_IDENTITY", "1")])).await;
    settle_identity(&app, &app.browser).await;
    app.emulator.script("POST", CHAT, slow_blocking_answer());
    let (slow_body, meanwhile) = (blocking("slow"), blocking("meanwhile"));
    let (slow, refused) = tokio::join!(app.browser.chat(&slow_body), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.browser.chat(&meanwhile).await
    });
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_rate_limited(&refused);
    // The slot is given back as the answer's body ends; allow a moment for that.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let next = app.browser.chat(&blocking("after")).await;
        if next.status == 200 {
            break;
        }
        assert_rate_limited(&next);
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Non-streaming answers are streamed through

#[tokio::test]
async fn a_huge_message_list_arrives_byte_identical_as_json() {
    let app = TestApp::spawn().await;
    let filler = "0123456789abcdef".repeat(20 * 1024 * 1024 / 16);
    let body = format!(
        "{{\"limit\": 20, \"has_more\": false, \"data\": [{{\"id\": \"{MESSAGE}\", \"answer\": \"{filler}\"}}]}}\n"
    );
    assert!(body.len() > 20 * 1024 * 1024);
    app.emulator
        .script("GET", "/messages", Reply::raw_json(200, &body));
    let res = app
        .browser
        .get(&format!("/messages?conversation_id={CONVERSATION}"))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.body.len(), body.len());
    assert!(res.body == body.as_bytes(), "the bytes differ");
}

// ---------------------------------------------------------------------------------------------
// 4. Huge Dify error bodies are not relayed

/// A Dify-shaped error whose body is 2 MB.
fn huge_error() -> Reply {
    let body = format!(
        "{{\"code\": \"invalid_param\", \"message\": \"{}\", \"status\": 400}}\n",
        "x".repeat(2 * 1024 * 1024)
    );
    Reply::raw_json(400, &body)
}

fn assert_small_502(res: &TestResponse) {
    res.assert_error(502, "upstream_unavailable");
    assert!(res.body.len() < 64 * 1024, "{} bytes", res.body.len());
    assert!(!res.text().contains("xxxxxxxxxxxxxxxx"));
}

#[tokio::test]
async fn a_huge_dify_error_before_a_stream_is_502_not_relayed() {
    let app = TestApp::spawn().await;
    app.emulator.script("POST", CHAT, huge_error());
    let res = app.browser.chat(&json!({"query": "hi"})).await;
    assert_small_502(&res);
    assert_eq!(app.upstream_requests(CHAT).len(), 1);
}

#[tokio::test]
async fn a_normal_dify_error_before_a_stream_is_relayed_with_its_status_and_code() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::json(
            400,
            &json!({"code": "invalid_param", "message": "bad", "status": 400}),
        ),
    );
    let res = app.browser.chat(&json!({"query": "hi"})).await;
    res.assert_error(400, "invalid_param");
}

#[tokio::test]
async fn a_huge_dify_error_on_a_non_streaming_call_is_502_not_relayed() {
    let app = TestApp::spawn().await;
    app.emulator.script("GET", "/conversations", huge_error());
    let res = app.browser.get("/conversations").await;
    assert_small_502(&res);
}

// ---------------------------------------------------------------------------------------------
// 5. Multipart part headers are bounded

#[tokio::test]
async fn multipart_part_headers_that_never_end_are_400_without_waiting_for_the_body() {
    let app = TestApp::spawn().await;
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nX-Pad: "
    )
    .into_bytes();
    head.resize(2 * 1024 * 1024, b'a');
    // The declared body is longer than what is sent: the answer may not wait for the rest.
    let request = format!(
        "POST /files/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.addr,
        head.len() + 1024 * 1024
    );
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(request.as_bytes()).await;
        let _ = writer.write_all(&head).await;
        // Hold the connection open without sending the rest.
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(writer);
    });
    let started = Instant::now();
    let answer = read_answer(&mut reader).await;
    sender.abort();
    assert!(started.elapsed() < Duration::from_secs(5));
    Raw::parse(&answer).assert_error(400, "invalid_param");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn part_headers_held_by_uploads_count_against_the_shared_body_budget() {
    let app = TestApp::spawn_with_env(vars(&[
        ("MAX_BODY_BYTES", "1000"),
        ("MAX_BUFFERED_BODY_BYTES", "1500"),
    ]))
    .await;
    let mut head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nX-Pad: "
    )
    .into_bytes();
    head.resize(1400, b'a');
    let request = format!(
        "POST /files/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        app.addr,
        head.len() + 1024
    );
    let mut holder = TcpStream::connect(app.addr).await.expect("connect");
    holder.write_all(request.as_bytes()).await.expect("head");
    holder.write_all(&head).await.expect("part head");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let refused = upload(&app.browser, multipart_png()).await;
    refused.assert_error(503, "overloaded");

    drop(holder);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = upload(&app.browser, multipart_png()).await;
    assert_eq!(res.status, 201, "the budget is freed: {}", res.text());
}

#[tokio::test]
async fn a_small_upload_is_still_relayed_to_dify() {
    let app = TestApp::spawn().await;
    let res = upload(&app.browser, multipart_png()).await;
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(res.json()["size"], PNG.len());
    assert_eq!(app.upstream_requests(UPLOAD).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Header mode

#[test]
fn header_mode_without_trusted_proxies_stops_start_up_with_exit_2_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dify-bff"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .env("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
        .env("PORT", port.to_string())
        .env("USER_HEADER", USER_HEADER)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // Were the setting accepted, the server would run: give it a bounded time to exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    }
    let status = status.unwrap_or_else(|| panic!("it started serving: {err}"));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("TRUSTED_PROXIES"), "{err}");
}

async fn as_header_user(app: &TestApp, user: &[u8]) -> TestResponse {
    let value = HeaderValue::from_bytes(user).expect("a header value");
    app.browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, value),
        )
        .await
}

#[tokio::test]
async fn header_identities_with_invisible_or_bidi_characters_are_401() {
    let app = header_mode().await;
    for c in [
        '\u{200B}',
        '\u{202E}',
        '\u{2028}',
        '\u{2066}',
        '\u{1BCA0}',
        '\u{13430}',
        '\u{0600}',
        '\u{2800}',
        '\u{FFFE}',
    ] {
        let user = format!("alice{c}@example.com");
        let res = as_header_user(&app, user.as_bytes()).await;
        res.assert_error(401, "unauthorized");
    }
    assert!(app.upstream_requests("/v1/conversations").is_empty());
    // The same identity without the invisible character is accepted.
    assert_eq!(as_header_user(&app, b"alice@example.com").await.status, 200);
}

#[tokio::test]
async fn look_alike_header_identities_in_composed_and_decomposed_form_are_one_user() {
    let app = header_mode().await;
    for user in ["Zo\u{00EB}", "Zoe\u{0308}"] {
        assert_eq!(as_header_user(&app, user.as_bytes()).await.status, 200);
    }
    let users: Vec<String> = app
        .upstream_requests("/v1/conversations")
        .iter()
        .filter_map(|r| r.user())
        .collect();
    assert_eq!(users, ["Zo\u{00EB}", "Zo\u{00EB}"]);
}

#[tokio::test]
async fn a_256_character_header_identity_is_401() {
    let app = header_mode().await;
    let res = as_header_user(&app, "a".repeat(256).as_bytes()).await;
    res.assert_error(401, "unauthorized");
    assert!(app.upstream_requests("/v1/conversations").is_empty());
}

#[tokio::test]
async fn a_255_character_header_identity_reaches_dify_as_the_user() {
    let app = header_mode().await;
    let user = "a".repeat(255);
    let res = as_header_user(&app, user.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/conversations");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user().as_deref(), Some(user.as_str()));
}

// ---------------------------------------------------------------------------------------------
// 7. Cookie tossing

/// The `name=value` pairs of the response's `Set-Cookie` headers, each with its attributes.
fn set_cookies(res: &TestResponse) -> Vec<(String, Vec<String>)> {
    res.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| {
            let text = v.to_str().expect("ASCII cookie");
            let mut parts = text.split(';').map(|p| p.trim().to_owned());
            let pair = parts.next().unwrap_or_default();
            (pair, parts.collect())
        })
        .collect()
}

/// The one identity cookie the response sets: its `name=value` pair and attributes.
fn identity_cookie(res: &TestResponse) -> (String, Vec<String>) {
    let cookies = set_cookies(res);
    assert_eq!(cookies.len(), 1, "one Set-Cookie: {cookies:?}");
    cookies.into_iter().next().expect("a cookie")
}

fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(n, _)| n)
}

fn has_attribute(attributes: &[String], name: &str) -> bool {
    attributes.iter().any(|a| {
        a.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
    })
}

/// A cookie-less client: every header is set by hand.
async fn list_with(app: &TestApp, headers: &[(&str, &str)]) -> TestResponse {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{}/conversations", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    TestResponse::read(request.send().await.expect("request sent")).await
}

fn last_user(app: &TestApp, path: &str) -> String {
    app.upstream_requests(path)
        .last()
        .and_then(|r| r.user())
        .expect("a user reached Dify")
}

#[tokio::test]
async fn two_identity_cookies_count_as_none() {
    let app = TestApp::spawn().await;
    let mut pairs = Vec::new();
    let mut users = Vec::new();
    for _ in 0..2 {
        let browser = app.new_browser();
        let res = browser.chat(&blocking("remember me")).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let (pair, _) = identity_cookie(&res);
        assert_eq!(cookie_name(&pair), COOKIE);
        pairs.push(pair);
        users.push(last_user(&app, CHAT));
        // Each identity now has a conversation of its own.
        let own = browser.get("/conversations").await;
        assert_eq!(own.json()["data"].as_array().map(Vec::len), Some(1));
    }
    assert_ne!(users[0], users[1]);

    let both = format!("{}; {}", pairs[0], pairs[1]);
    let res = list_with(&app, &[("cookie", &both)]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (fresh, _) = identity_cookie(&res);
    assert_eq!(cookie_name(&fresh), COOKIE);
    assert!(!pairs.contains(&fresh));
    assert_eq!(res.json()["data"], json!([]), "{}", res.text());
    let seen_as = last_user(&app, "/v1/conversations");
    assert!(!users.contains(&seen_as), "acted as {seen_as}");
}

#[tokio::test]
async fn over_https_the_fresh_cookie_is_host_prefixed_secure_and_without_domain() {
    let app = TestApp::spawn().await;
    let https = ("x-forwarded-proto", "https");
    let res = list_with(&app, &[https]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (pair, attributes) = identity_cookie(&res);
    assert_eq!(cookie_name(&pair), HOST_COOKIE);
    assert!(has_attribute(&attributes, "secure"), "{attributes:?}");
    assert!(attributes.iter().any(|a| a == "Path=/"), "{attributes:?}");
    assert!(!has_attribute(&attributes, "domain"), "{attributes:?}");
    let user = last_user(&app, "/v1/conversations");

    // Sent back over HTTPS, it is the same identity and no new cookie is issued.
    let again = list_with(&app, &[https, ("cookie", &pair)]).await;
    assert!(set_cookies(&again).is_empty(), "{:?}", set_cookies(&again));
    assert_eq!(last_user(&app, "/v1/conversations"), user);
}

#[tokio::test]
async fn over_https_a_plain_identity_cookie_is_ignored() {
    let app = TestApp::spawn().await;
    let res = list_with(&app, &[]).await;
    let (plain, _) = identity_cookie(&res);
    assert_eq!(cookie_name(&plain), COOKIE);
    let user = last_user(&app, "/v1/conversations");
    // It is valid: over plain HTTP it is the same identity.
    let again = list_with(&app, &[("cookie", &plain)]).await;
    assert!(set_cookies(&again).is_empty());
    assert_eq!(last_user(&app, "/v1/conversations"), user);

    let res = list_with(&app, &[("x-forwarded-proto", "https"), ("cookie", &plain)]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (fresh, _) = identity_cookie(&res);
    assert_eq!(cookie_name(&fresh), HOST_COOKIE);
    assert_ne!(last_user(&app, "/v1/conversations"), user);
}

#[tokio::test]
async fn over_plain_http_the_cookie_is_unprefixed_and_not_secure() {
    let app = TestApp::spawn().await;
    let res = list_with(&app, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let (pair, attributes) = identity_cookie(&res);
    assert_eq!(cookie_name(&pair), COOKIE);
    assert!(!has_attribute(&attributes, "secure"), "{attributes:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. The identity hash in logs is keyed

/// The captured JSON log lines.
fn log_lines() -> Vec<Value> {
    logs::captured()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn the_access_log_identity_hash_is_keyed_not_a_plain_sha256() {
    let app = header_mode().await;
    let identity = "alice@example.com";
    let request_id = format!("attack-{}", uuid::Uuid::new_v4().simple());
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header(USER_HEADER, identity)
                .header("x-request-id", &request_id),
        )
        .await;
    assert_eq!(res.status, 200);
    let line = log_lines()
        .into_iter()
        .find(|l| l["request_id"] == request_id.as_str() && l["message"] == "request")
        .expect("the access log line of the request");
    let logged = line["identity"].as_str().expect("an identity field");
    assert_eq!(logged.len(), 12, "{line}");
    assert!(logged.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    let plain: String = Sha256::digest(identity.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(logged.to_ascii_lowercase(), plain, "an unkeyed hash");
}

#[tokio::test]
async fn a_header_identity_never_appears_in_the_logs() {
    let app = header_mode().await;
    let identity = "mallory.logwatch@example.org";
    for path in ["/conversations", "/parameters"] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, path)
                    .header(USER_HEADER, identity),
            )
            .await;
        assert_eq!(res.status, 200, "{path}: {}", res.text());
    }
    assert_eq!(
        last_user(&app, "/v1/conversations"),
        identity,
        "it is the user"
    );
    let logged = logs::captured();
    assert!(
        logged.contains("\"identity\":"),
        "access lines are captured"
    );
    for form in [identity, "mallory.logwatch%40example.org"] {
        assert!(!logged.contains(form), "{form} was logged");
    }
}

// ---------------------------------------------------------------------------------------------
// 9. An endless SSE event

#[tokio::test]
async fn an_endless_sse_event_is_relayed_unchanged_and_the_stream_still_ends_normally() {
    let app = TestApp::spawn().await;
    let mut all = format!(
        "data: {{\"event\": \"message\", \"task_id\": \"{TASK}\", \"message_id\": \"{MESSAGE}\", \"conversation_id\": \"{CONVERSATION}\", \"answer\": \"hi\"}}\n\n"
    )
    .into_bytes();
    let line = format!("data: {}\n", "x".repeat(8 * 1024));
    for _ in 0..1024 {
        all.extend_from_slice(line.as_bytes());
    }
    all.extend_from_slice(b"\n");
    all.extend_from_slice(format!(
        "data: {{\"event\": \"message_end\", \"task_id\": \"{TASK}\", \"id\": \"{MESSAGE}\", \"message_id\": \"{MESSAGE}\", \"conversation_id\": \"{CONVERSATION}\", \"metadata\": {{\"usage\": {{\"total_tokens\": 3}}}}}}\n\n"
    ).as_bytes());
    assert!(all.len() > 8 * 1024 * 1024);
    let chunks: Vec<Bytes> = all.chunks(256 * 1024).map(Bytes::copy_from_slice).collect();
    app.emulator.script("POST", CHAT, Reply::sse(chunks));
    let response = app.browser.chat_stream(&json!({"query": "hi"})).await;
    assert_eq!(response.status(), 200);
    let got = read_stream(response).await;
    assert_eq!(got.len(), all.len(), "length");
    assert!(
        got == all,
        "the bytes differ; tail: {:?}",
        String::from_utf8_lossy(&got[got.len().saturating_sub(300)..])
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Slow bodies

#[tokio::test]
async fn a_body_trickling_past_the_whole_body_deadline_is_408() {
    // The environment takes whole seconds; the parsed config takes a sub-second deadline, with
    // an idle timeout far longer than the gap between two bytes.
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.request_body_deadline = Duration::from_millis(300);
        c.request_body_timeout = Duration::from_secs(30);
    })
    .await;
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
        app.addr
    );
    let stream = TcpStream::connect(app.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        // 100 bytes at one per 50 ms would take 5 s, each gap far under the idle timeout.
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let answer = read_answer(&mut reader).await;
    let waited = started.elapsed();
    sender.abort();
    Raw::parse(&answer).assert_error(408, "request_timeout");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_millis(2000), "{waited:?}");
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// 11–13. Request-head and page oddities

#[tokio::test]
async fn two_host_headers_are_400() {
    let app = TestApp::spawn().await;
    let request = format!(
        "GET /conversations HTTP/1.1\r\nHost: {}\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        app.addr
    );
    raw_bytes(&app, request.as_bytes())
        .await
        .assert_error(400, "invalid_param");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_double_slash_directory_path_never_redirects_to_another_host() {
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");
    assert!(std::path::Path::new(static_dir).join("js").is_dir());
    let app = TestApp::spawn_with_env(vars(&[("STATIC_DIR", static_dir)])).await;
    for target in ["//js", "//js/", "///js"] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            app.addr
        );
        let res = raw_bytes(&app, request.as_bytes()).await;
        for location in header_values(&res, "location") {
            assert!(
                !location.starts_with("//") && !location.starts_with("/\\"),
                "{target} redirects to {location}"
            );
        }
    }
}

#[tokio::test]
async fn the_page_may_be_framed_only_by_its_own_origin() {
    let app = TestApp::spawn().await;
    let res = app.browser.get("/").await;
    assert_eq!(res.status, 200);
    let csp = res
        .header("content-security-policy")
        .expect("a Content-Security-Policy");
    assert!(
        csp.split(';')
            .any(|d| d.split_whitespace().collect::<Vec<_>>() == ["frame-ancestors", "'self'"]),
        "{csp}"
    );
}
