//! The emulator over real sockets: wire bytes against the captures, state, scripts, streams.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::capture::{CapturedResponse, parse_response};
use super::pyjson::{PING, python_json};
use super::*;

const KEY: &str = "app-TESTKEY0000000000000000";
const AUTH: (&str, &str) = ("Authorization", "Bearer app-TESTKEY0000000000000000");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const DEFAULT_ANSWER_1: &str = "Hello! Dify 是一个平台 🚀 — answer #1.";

fn fast() -> EmulatorOptions {
    EmulatorOptions {
        token_interval: Duration::from_millis(2),
        ..EmulatorOptions::default()
    }
}

async fn start(opts: EmulatorOptions) -> Emulator {
    Emulator::start(opts).await.unwrap()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    [head.as_bytes(), body].concat()
}

/// Sends raw bytes and reads until the server closes (or resets) the connection.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .unwrap();
    received
}

fn parse(wire: &[u8]) -> CapturedResponse {
    parse_response(&[b"#### RESPONSE\n".as_slice(), wire].concat()).unwrap()
}

fn body(r: &CapturedResponse) -> String {
    String::from_utf8(r.chunks.concat()).unwrap()
}

fn header<'a>(r: &'a CapturedResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

async fn call(
    emu: &Emulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> CapturedResponse {
    parse(&exchange(emu.addr(), request(method, path, headers, body.as_bytes())).await)
}

async fn post(emu: &Emulator, path: &str, json: Value) -> CapturedResponse {
    call(emu, "POST", path, &[AUTH, JSON], &json.to_string()).await
}

async fn get(emu: &Emulator, path: &str) -> CapturedResponse {
    call(emu, "GET", path, &[AUTH], "").await
}

fn json_of(r: &CapturedResponse) -> Value {
    serde_json::from_str(&body(r)).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

async fn blocking_chat(
    emu: &Emulator,
    user: &str,
    query: &str,
    conversation: Option<&str>,
) -> Value {
    let mut req = json!({"inputs": {}, "query": query, "user": user, "response_mode": "blocking"});
    if let Some(c) = conversation {
        req["conversation_id"] = json!(c);
    }
    let resp = post(emu, "/v1/chat-messages", req).await;
    assert_eq!(resp.status, 200, "{}", body(&resp));
    json_of(&resp)
}

fn sse_events(r: &CapturedResponse) -> Vec<Value> {
    r.chunks
        .iter()
        .filter(|c| c.as_ref() != PING)
        .map(|c| {
            let text = std::str::from_utf8(c).unwrap();
            serde_json::from_str(
                text.strip_prefix("data: ")
                    .unwrap()
                    .strip_suffix("\n\n")
                    .unwrap(),
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn blocking_chat_has_capture_01s_shape_and_bytes() {
    let emu = start(fast()).await;
    let resp = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "What is Dify?", "user": "user-alice", "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(!resp.chunked);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&resp, "x-version"), Some("0.15.3"));
    assert_eq!(header(&resp, "x-env"), Some("PRODUCTION"));
    let text = body(&resp);
    assert!(
        !text.ends_with('\n'),
        "the blocking body has no trailing newline"
    );
    assert!(text.contains(
        r#""answer": "Hello! Dify \u662f\u4e00\u4e2a\u5e73\u53f0 \ud83d\ude80 \u2014 answer #1.""#
    ));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(python_json(&v), text);
    assert_eq!(
        keys(&v),
        [
            "event",
            "task_id",
            "id",
            "message_id",
            "conversation_id",
            "mode",
            "answer",
            "metadata",
            "created_at"
        ]
    );
    assert_eq!(v["id"], v["message_id"]);
    assert_eq!(v["mode"], "chat");
    assert_eq!(v["answer"], DEFAULT_ANSWER_1);
    assert_eq!(
        keys(&v["metadata"]["usage"]),
        [
            "prompt_tokens",
            "prompt_unit_price",
            "prompt_price_unit",
            "prompt_price",
            "completion_tokens",
            "completion_unit_price",
            "completion_price_unit",
            "completion_price",
            "total_tokens",
            "total_price",
            "currency",
            "latency"
        ]
    );
    assert_eq!(v["metadata"]["usage"]["prompt_price"], "0E-7");
}

#[tokio::test]
async fn streaming_chat_writes_capture_02s_events_one_per_chunk() {
    let emu = start(fast()).await;
    let resp = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "Tell me about streaming 🚀", "user": "user-alice", "response_mode": "streaming"}),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(resp.chunked);
    assert_eq!(
        header(&resp, "content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(header(&resp, "cache-control"), None);
    assert_eq!(
        resp.chunks.len(),
        8,
        "six pieces, the empty final message, message_end"
    );
    assert!(
        resp.chunks
            .iter()
            .all(|c| c.starts_with(b"data: {") && c.ends_with(b"}\n\n"))
    );
    let events = sse_events(&resp);
    let message_keys = [
        "event",
        "conversation_id",
        "message_id",
        "created_at",
        "task_id",
        "id",
        "answer",
        "from_variable_selector",
    ];
    for event in &events[..7] {
        assert_eq!(keys(event), message_keys);
        assert_eq!(event["from_variable_selector"], Value::Null);
        assert_eq!(event["task_id"], events[0]["task_id"]);
    }
    let answer: String = events[..7]
        .iter()
        .map(|e| e["answer"].as_str().unwrap())
        .collect();
    assert_eq!(answer, DEFAULT_ANSWER_1);
    assert_eq!(events[1]["answer"], " Dify ");
    assert_eq!(events[6]["answer"], "");
    let end = &events[7];
    assert_eq!(
        keys(end),
        [
            "event",
            "conversation_id",
            "message_id",
            "created_at",
            "task_id",
            "id",
            "metadata",
            "files"
        ]
    );
    assert_eq!(end["event"], "message_end");
    assert_eq!(end["files"], Value::Null);
    assert_eq!(end["metadata"]["usage"]["total_tokens"], 18);
    for chunk in &resp.chunks {
        let text = std::str::from_utf8(chunk).unwrap();
        let v: Value = serde_json::from_str(&text[6..]).unwrap();
        assert_eq!(format!("data: {}\n\n", python_json(&v)), text);
    }

    // The conversation was named after its first answer, and the answer stored.
    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let list = json_of(&get(&emu, "/v1/conversations?user=user-alice").await);
    assert_eq!(list["data"][0]["id"], conversation);
    assert_eq!(list["data"][0]["name"], "Tell me about streaming 🚀");
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    assert_eq!(messages["data"][0]["answer"], DEFAULT_ANSWER_1);
    assert_eq!(messages["data"][0]["query"], "Tell me about streaming 🚀");
}

#[tokio::test]
async fn pings_come_on_the_interval_even_while_tokens_flow() {
    let opts = EmulatorOptions {
        ping_interval: Duration::from_millis(60),
        slow_interval: Duration::from_millis(15),
        ..fast()
    };
    let emu = start(opts).await;
    let resp = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "SLOW full run", "user": "user-bob", "response_mode": "streaming"}),
    )
    .await;
    let pings = resp.chunks.iter().filter(|c| c.as_ref() == PING).count();
    assert!((3..=15).contains(&pings), "{pings} pings in ~450 ms");
    assert_ne!(resp.chunks[0].as_ref(), PING, "no ping at the start");
    let events = sse_events(&resp);
    assert_eq!(events.len(), 32);
    assert_eq!(events[13]["answer"], "slow13 ");
    assert_eq!(events.last().unwrap()["event"], "message_end");
}

#[tokio::test]
async fn stop_ends_only_the_users_own_stream_with_message_end() {
    let opts = EmulatorOptions {
        slow_interval: Duration::from_millis(100),
        stop_latency: Duration::from_millis(30),
        ..fast()
    };
    let emu = start(opts).await;
    let client = reqwest::Client::new();
    let mut resp = client
        .post(format!("{}/chat-messages", emu.base_url()))
        .bearer_auth(KEY)
        .json(&json!({"inputs": {}, "query": "SLOW please", "user": "user-alice", "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    let first: Value = serde_json::from_slice(&first[6..]).unwrap();
    let task = first["task_id"].as_str().unwrap().to_owned();
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();

    let stop_path = format!("/v1/chat-messages/{task}/stop");
    let other = post(&emu, &stop_path, json!({"user": "someone-else"})).await;
    assert_eq!(
        (other.status, body(&other).as_str()),
        (200, "{\"result\": \"success\"}\n")
    );
    let no_user = post(&emu, &stop_path, json!({})).await;
    assert_eq!(
        (no_user.status, body(&no_user).as_str()),
        (
            400,
            "{\"code\": \"invalid_param\", \"message\": \"Arg user must be provided.\", \"status\": 400}\n"
        )
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped_at = tokio::time::Instant::now();
    assert_eq!(
        post(&emu, &stop_path, json!({"user": "user-alice"}))
            .await
            .status,
        200
    );

    let mut rest = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        rest.push(chunk);
    }
    assert!(
        stopped_at.elapsed() < Duration::from_secs(1),
        "a full answer would take 3 s"
    );
    let last: Value = serde_json::from_slice(&rest.last().unwrap()[6..]).unwrap();
    assert_eq!(last["event"], "message_end");
    assert_eq!(last["metadata"]["usage"]["prompt_tokens"], 10);
    assert!(rest.len() < 10, "the answer was cut short");

    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    let answer = messages["data"][0]["answer"].as_str().unwrap();
    assert!(
        answer.starts_with("slow0 slow1") && !answer.ends_with(' '),
        "{answer}"
    );
    assert_eq!(messages["data"][0]["status"], "normal");
    assert_eq!(emu.dropped_streams(), Vec::<String>::new());
}

#[tokio::test]
async fn a_client_that_goes_away_is_recorded_and_generation_stops() {
    let emu = start(EmulatorOptions {
        slow_interval: Duration::from_millis(30),
        ..fast()
    })
    .await;
    let mut stream = TcpStream::connect(emu.addr()).await.unwrap();
    let req =
        json!({"inputs": {}, "query": "SLOW", "user": "user-alice", "response_mode": "streaming"});
    stream
        .write_all(&request(
            "POST",
            "/v1/chat-messages",
            &[AUTH, JSON],
            req.to_string().as_bytes(),
        ))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(n > 0);
    assert_eq!(emu.open_streams(), 1);
    drop(stream);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while emu.open_streams() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(emu.open_streams(), 0);
    let dropped = emu.dropped_streams();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].len(), 36, "the task id");
    let list = json_of(&get(&emu, "/v1/conversations?user=user-alice").await);
    let conversation = list["data"][0]["id"].as_str().unwrap();
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    let answer = messages["data"][0]["answer"].as_str().unwrap();
    assert!(
        answer.starts_with("slow0") && !answer.contains("slow29"),
        "{answer}"
    );
}

#[tokio::test]
async fn upstream_failures_match_captures_55_to_58() {
    let emu = start(fast()).await;
    let fail = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "FAIL500 now", "user": "user-alice", "response_mode": "streaming"}),
    )
    .await;
    assert_eq!(fail.status, 200);
    assert_eq!(fail.chunks.len(), 1);
    let error = &sse_events(&fail)[0];
    assert_eq!(
        keys(error),
        [
            "event",
            "conversation_id",
            "message_id",
            "created_at",
            "code",
            "status",
            "message"
        ]
    );
    assert_eq!(error["code"], "completion_request_error");
    assert_eq!(error["status"], 400);
    assert_eq!(error["message"], answers::FAIL500_MESSAGE);

    let blocking = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "FAIL500 now", "user": "user-alice", "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(blocking.status, 400);
    assert_eq!(
        body(&blocking),
        "{\"code\": \"completion_request_error\", \"message\": \"[openai_api_compatible] Error: API request failed with status code 500: {\\\"error\\\": {\\\"message\\\": \\\"fake upstream exploded\\\", \\\"type\\\": \\\"server_error\\\"}}\", \"status\": 400}\n"
    );

    let mid = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "MIDFAIL now", "user": "user-alice", "response_mode": "streaming"}),
    )
    .await;
    let events = sse_events(&mid);
    assert_eq!(events.len(), 3);
    assert_eq!(
        (events[0]["answer"].as_str(), events[1]["answer"].as_str()),
        (Some("partial "), Some("text "))
    );
    assert_eq!(events[2]["message"], answers::MIDFAIL_MESSAGE);

    let conversation = events[0]["conversation_id"].as_str().unwrap();
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    let item = &messages["data"][0];
    assert_eq!(
        (item["answer"].as_str(), item["status"].as_str()),
        (Some(""), Some("error"))
    );
    assert_eq!(item["error"], answers::MIDFAIL_MESSAGE);
    assert_eq!(
        keys(item),
        [
            "id",
            "conversation_id",
            "parent_message_id",
            "inputs",
            "query",
            "answer",
            "message_files",
            "feedback",
            "retriever_resources",
            "created_at",
            "agent_thoughts",
            "status",
            "error"
        ]
    );
    assert_eq!(
        item["parent_message_id"],
        "00000000-0000-0000-0000-000000000000"
    );
}

struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    status: u16,
    expected: &'static str,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    headers: &[(&'static str, &'static str)],
    body: impl Into<String>,
    status: u16,
    expected: &'static str,
) -> Case {
    Case {
        method,
        path: path.into(),
        headers: headers.to_vec(),
        body: body.into(),
        status,
        expected,
    }
}

#[tokio::test]
async fn error_bodies_are_the_captured_bytes() {
    let emu = start(fast()).await;
    let alice = blocking_chat(&emu, "user-alice", "hi", None).await;
    let message = alice["message_id"].as_str().unwrap().to_owned();
    let conversation = alice["conversation_id"].as_str().unwrap().to_owned();
    let chat = "/v1/chat-messages";
    let hi = r#"{"inputs": {}, "query": "hi", "user": "user-alice", "response_mode": "blocking"}"#;
    let unknown = "d41d4f5e-0196-48fa-9e2d-16629ae400ae";
    let cases = [
        case(
            "POST",
            chat,
            &[JSON],
            hi,
            401,
            r#"{"code": "unauthorized", "message": "Authorization header must be provided and start with 'Bearer'", "status": 401}"#,
        ),
        case(
            "POST",
            chat,
            &[JSON, ("Authorization", "Bearer app-doesnotexist0000000000")],
            hi,
            401,
            r#"{"code": "unauthorized", "message": "Access token is invalid", "status": 401}"#,
        ),
        case(
            "POST",
            chat,
            &[JSON, ("Authorization", KEY)],
            hi,
            401,
            r#"{"code": "unauthorized", "message": "Authorization header must be provided and start with 'Bearer'", "status": 401}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": {}, "user": "user-alice", "response_mode": "blocking"}"#,
            400,
            r#"{"code": "invalid_param", "message": "Missing required parameter in the JSON body", "params": "query"}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": {}, "query": "hi", "response_mode": "blocking"}"#,
            400,
            r#"{"code": "invalid_param", "message": "Arg user must be provided.", "status": 400}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"query": "hi", "user": "user-alice", "response_mode": "blocking"}"#,
            400,
            r#"{"code": "invalid_param", "message": "Missing required parameter in the JSON body", "params": "inputs"}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            format!(
                r#"{{"inputs": {{}}, "query": "hi", "user": "user-alice", "response_mode": "streaming", "conversation_id": "{unknown}"}}"#
            ),
            404,
            r#"{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": {}, "query": "hi", "user": "user-alice", "response_mode": "blocking", "conversation_id": "abc"}"#,
            400,
            r#"{"code": "invalid_param", "message": "abc is not a valid uuid.", "params": "conversation_id"}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": {}, "query": "hi", "user": "user-alice", "response_mode": "fast"}"#,
            400,
            r#"{"code": "invalid_param", "message": "fast is not a valid choice", "params": "response_mode"}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"query": "hi", "#,
            400,
            r#"{"code": "bad_request", "message": "The browser (or proxy) sent a request that this server could not understand.", "status": 400}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": {}, "query": "", "user": "user-alice", "response_mode": "blocking"}"#,
            400,
            r#"{"code": "invalid_param", "message": "query is required", "status": 400}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, JSON],
            r#"{"inputs": "x", "query": "hi", "user": "user-dave", "response_mode": "blocking"}"#,
            400,
            r#"{"code": "invalid_param", "message": "dictionary update sequence element #0 has length 1; 2 is required", "params": "inputs"}"#,
        ),
        case(
            "POST",
            chat,
            &[AUTH, ("Content-Type", "text/plain")],
            hi,
            415,
            r#"{"code": "unsupported_media_type", "message": "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.", "status": 415}"#,
        ),
        case(
            "DELETE",
            format!("/v1/conversations/{conversation}"),
            &[AUTH],
            "",
            415,
            r#"{"code": "unsupported_media_type", "message": "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.", "status": 415}"#,
        ),
        case(
            "GET",
            "/v1/conversations?user=user-alice&last_id=946c98c9-4c54-45f4-ac4e-f35be5715cff",
            &[AUTH],
            "",
            404,
            r#"{"code": "not_found", "message": "Last Conversation Not Exists.", "status": 404}"#,
        ),
        case(
            "GET",
            "/v1/conversations?user=user-alice&last_id=not-a-uuid",
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "not-a-uuid is not a valid uuid.", "params": "last_id"}"#,
        ),
        case(
            "GET",
            "/v1/conversations?user=user-alice&limit=0",
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "Invalid argument: 0. argument must be within the range 1 - 100", "params": "limit"}"#,
        ),
        case(
            "GET",
            "/v1/conversations?user=user-alice&limit=101",
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "Invalid argument: 101. argument must be within the range 1 - 100", "params": "limit"}"#,
        ),
        case(
            "GET",
            "/v1/conversations?user=user-alice&limit=abc",
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "abc is not a valid integer", "params": "limit"}"#,
        ),
        case(
            "GET",
            format!(
                "/v1/messages?user=user-alice&conversation_id={conversation}&first_id=a61e8572-ea8a-4f0f-9b3a-74bcc51c7bb1"
            ),
            &[AUTH],
            "",
            404,
            r#"{"code": "not_found", "message": "First Message Not Exists.", "status": 404}"#,
        ),
        case(
            "GET",
            "/v1/messages?user=user-alice",
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "Missing required parameter in the query string", "params": "conversation_id"}"#,
        ),
        case(
            "GET",
            format!("/v1/messages?user=user-alice&conversation_id={unknown}"),
            &[AUTH],
            "",
            404,
            r#"{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}"#,
        ),
        case(
            "GET",
            format!("/v1/messages?user=user-alice&conversation_id={conversation}&limit=0"),
            &[AUTH],
            "",
            400,
            r#"{"code": "invalid_param", "message": "Invalid argument: 0. argument must be within the range 1 - 100", "params": "limit"}"#,
        ),
        case(
            "POST",
            format!("/v1/conversations/{conversation}/name"),
            &[AUTH, JSON],
            r#"{"user": "user-alice"}"#,
            500,
            r#"{"message": "Internal Server Error", "code": "unknown"}"#,
        ),
        case(
            "POST",
            format!("/v1/conversations/{unknown}/name"),
            &[AUTH, JSON],
            r#"{"name": "x", "user": "user-alice"}"#,
            404,
            r#"{"code": "not_found", "message": "Conversation Not Exists.", "status": 404}"#,
        ),
        case(
            "POST",
            format!("/v1/messages/{message}/feedbacks"),
            &[AUTH, JSON],
            r#"{"rating": "love", "user": "user-alice"}"#,
            400,
            r#"{"code": "invalid_param", "message": "love is not a valid choice", "params": "rating"}"#,
        ),
        case(
            "POST",
            format!("/v1/messages/{unknown}/feedbacks"),
            &[AUTH, JSON],
            r#"{"rating": "dislike", "user": "user-alice"}"#,
            404,
            r#"{"code": "not_found", "message": "Message Not Exists.", "status": 404}"#,
        ),
        case(
            "GET",
            format!("/v1/messages/{message}/suggested?user=user-alice"),
            &[AUTH],
            "",
            400,
            r#"{"code": "bad_request", "message": "Suggested Questions Is Disabled.", "status": 400}"#,
        ),
        case(
            "POST",
            "/v1/files/upload",
            &[
                AUTH,
                (
                    "Content-Type",
                    "multipart/form-data; boundary=----rawcaptureboundary7MA4YWxkTrZu0gW",
                ),
            ],
            "------rawcaptureboundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nuser-alice\r\n------rawcaptureboundary7MA4YWxkTrZu0gW--\r\n",
            400,
            r#"{"code": "bad_request_key_error", "message": "The browser (or proxy) sent a request that this server could not understand.", "status": 400}"#,
        ),
        case(
            "GET",
            "/v1/",
            &[],
            "",
            200,
            r#"{"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": "0.15.3"}"#,
        ),
    ];
    for Case {
        method,
        path,
        headers,
        body: req_body,
        status,
        expected,
    } in cases
    {
        let resp = call(&emu, method, &path, &headers, &req_body).await;
        assert_eq!(
            (resp.status, body(&resp)),
            (status, format!("{expected}\n")),
            "{method} {path} {req_body}"
        );
        assert_eq!(
            header(&resp, "content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
        assert_eq!(header(&resp, "x-version"), Some("0.15.3"), "{path}");
        assert_eq!(header(&resp, "www-authenticate"), None, "{path}");
    }

    let not_found = get(&emu, "/v1/nope").await;
    assert_eq!(
        (not_found.status, body(&not_found).as_str()),
        (404, respond::NOT_FOUND_HTML)
    );
    assert_eq!(
        header(&not_found, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&not_found, "access-control-allow-origin"), None);
    assert_eq!(header(&not_found, "x-version"), Some("0.15.3"));
    assert_eq!(
        get(&emu, "/v1/conversations/not-a-uuid/name").await.status,
        404
    );

    let wrong = get(&emu, "/v1/chat-messages").await;
    assert_eq!(wrong.status, 405);
    assert_eq!(
        body(&wrong),
        "{\"code\": \"method_not_allowed\", \"message\": \"The method is not allowed for the requested URL.\", \"status\": 405}\n"
    );
    assert_eq!(header(&wrong, "allow"), Some("OPTIONS, POST"));
    assert_eq!(header(&wrong, "access-control-allow-origin"), None);

    let preflight = call(
        &emu,
        "OPTIONS",
        chat,
        &[
            ("Origin", "https://example.org"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        Some("https://example.org")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(header(&preflight, "allow"), Some("OPTIONS, POST"));
}

#[tokio::test]
async fn conversations_list_rename_and_delete_like_dify() {
    let emu = start(fast()).await;
    let mut ids = Vec::new();
    for query in ["first one", "second one", "third one"] {
        ids.push(
            blocking_chat(&emu, "user-alice", query, None).await["conversation_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let names = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = json_of(&get(&emu, "/v1/conversations?user=user-alice").await);
    assert_eq!(names(&list), ["third one", "second one", "first one"]);
    assert_eq!(
        (list["limit"].as_i64(), list["has_more"].as_bool()),
        (Some(20), Some(false))
    );
    assert_eq!(
        keys(&list["data"][0]),
        [
            "id",
            "name",
            "inputs",
            "status",
            "introduction",
            "created_at",
            "updated_at"
        ]
    );

    let page = json_of(&get(&emu, "/v1/conversations?user=user-alice&limit=1").await);
    assert_eq!(
        (names(&page), page["has_more"].as_bool()),
        (vec!["third one".to_owned()], Some(true))
    );
    let next = json_of(
        &get(
            &emu,
            &format!(
                "/v1/conversations?user=user-alice&limit=2&last_id={}",
                ids[2]
            ),
        )
        .await,
    );
    assert_eq!(
        (names(&next), next["has_more"].as_bool()),
        (
            vec!["second one".to_owned(), "first one".to_owned()],
            Some(false)
        )
    );
    let ascending =
        json_of(&get(&emu, "/v1/conversations?user=user-alice&sort_by=created_at").await);
    assert_eq!(names(&ascending), ["first one", "second one", "third one"]);
    let empty = "{\"limit\": 20, \"has_more\": false, \"data\": []}\n";
    assert_eq!(body(&get(&emu, "/v1/conversations").await), empty);
    assert_eq!(
        body(&get(&emu, "/v1/conversations?user=someone-else").await),
        empty
    );

    let rename = post(
        &emu,
        &format!("/v1/conversations/{}/name", ids[0]),
        json!({"name": "Renamed 会话 ✨", "user": "user-alice"}),
    )
    .await;
    assert!(body(&rename).contains(r#""name": "Renamed \u4f1a\u8bdd \u2728""#));
    let renamed = json_of(&rename);
    assert_eq!(renamed["id"], ids[0].as_str());
    let list = json_of(&get(&emu, "/v1/conversations?user=user-alice").await);
    assert_eq!(
        names(&list)[0],
        "Renamed 会话 ✨",
        "a rename bumps updated_at"
    );
    let auto = json_of(
        &post(
            &emu,
            &format!("/v1/conversations/{}/name", ids[0]),
            json!({"auto_generate": true, "user": "user-alice"}),
        )
        .await,
    );
    assert_eq!(auto["name"], "first one");

    let delete_path = format!("/v1/conversations/{}", ids[1]);
    let deleted = post_with(&emu, "DELETE", &delete_path, json!({"user": "user-alice"})).await;
    assert_eq!(
        (deleted.status, body(&deleted).as_str()),
        (200, "{\"result\": \"success\"}\n")
    );
    assert_eq!(
        post_with(&emu, "DELETE", &delete_path, json!({"user": "user-alice"}))
            .await
            .status,
        404
    );
    let chat_on_deleted = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "hi", "user": "user-alice", "conversation_id": ids[1]}),
    )
    .await;
    assert_eq!(chat_on_deleted.status, 404);
    assert_eq!(
        get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={}", ids[1])
        )
        .await
        .status,
        404
    );
    assert_eq!(
        get(
            &emu,
            &format!("/v1/messages?user=someone-else&conversation_id={}", ids[0])
        )
        .await
        .status,
        404
    );

    let dave = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "no title please", "user": "user-dave", "response_mode": "blocking", "auto_generate_name": false}),
    )
    .await;
    assert_eq!(dave.status, 200);
    let list = json_of(&get(&emu, "/v1/conversations?user=user-dave").await);
    assert_eq!(names(&list), ["New conversation"]);
}

async fn post_with(emu: &Emulator, method: &str, path: &str, json: Value) -> CapturedResponse {
    call(emu, method, path, &[AUTH, JSON], &json.to_string()).await
}

#[tokio::test]
async fn messages_page_backwards_and_take_feedback() {
    let emu = start(EmulatorOptions {
        suggested_questions_after_answer: true,
        ..fast()
    })
    .await;
    let first = blocking_chat(&emu, "user-alice", "turn 1", None).await;
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    let second = blocking_chat(&emu, "user-alice", "turn 2", Some(&conversation)).await;
    let third = blocking_chat(&emu, "user-alice", "turn 3", Some(&conversation)).await;
    assert_eq!(third["conversation_id"], conversation.as_str());
    assert_eq!(third["answer"], "Hello! Dify 是一个平台 🚀 — answer #3.");

    let path = format!("/v1/messages?user=user-alice&conversation_id={conversation}");
    let all = json_of(&get(&emu, &path).await);
    let queries: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["query"].as_str().unwrap())
        .collect();
    assert_eq!(queries, ["turn 1", "turn 2", "turn 3"]);
    let older = json_of(
        &get(
            &emu,
            &format!(
                "{path}&first_id={}&limit=1",
                third["message_id"].as_str().unwrap()
            ),
        )
        .await,
    );
    assert_eq!(older["data"][0]["query"], "turn 2");
    assert_eq!(older["has_more"], true);
    assert_eq!(
        json_of(&get(&emu, "/v1/messages?user=user-alice&conversation_id=").await)["data"],
        json!([])
    );

    let feedback = format!(
        "/v1/messages/{}/feedbacks",
        second["message_id"].as_str().unwrap()
    );
    let like = post(
        &emu,
        &feedback,
        json!({"rating": "like", "user": "user-alice", "content": "good 👍"}),
    )
    .await;
    assert_eq!(
        (like.status, body(&like).as_str()),
        (200, "{\"result\": \"success\"}\n")
    );
    assert_eq!(
        json_of(&get(&emu, &path).await)["data"][1]["feedback"],
        json!({"rating": "like"})
    );
    assert_eq!(
        post(
            &emu,
            &feedback,
            json!({"rating": null, "user": "user-alice"})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        json_of(&get(&emu, &path).await)["data"][1]["feedback"],
        Value::Null
    );
    let again = post(
        &emu,
        &feedback,
        json!({"rating": null, "user": "user-alice"}),
    )
    .await;
    assert_eq!(
        json_of(&again)["message"],
        "rating cannot be None when feedback not exists"
    );
    assert_eq!(
        post(
            &emu,
            &feedback,
            json!({"rating": "like", "user": "someone-else"})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post(&emu, &feedback, json!({"rating": "like"}))
            .await
            .status,
        400
    );

    let suggested = format!(
        "/v1/messages/{}/suggested",
        second["message_id"].as_str().unwrap()
    );
    let questions = json_of(&get(&emu, &format!("{suggested}?user=user-alice")).await);
    assert_eq!(questions["result"], "success");
    assert_eq!(questions["data"].as_array().unwrap().len(), 3);
    assert_eq!(get(&emu, &suggested).await.status, 400, "user is required");
}

fn multipart(boundary: &str, user: &str, filename: &str, mime: &str, content: &[u8]) -> Vec<u8> {
    [
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\n{user}\r\n").as_bytes(),
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {mime}\r\n\r\n")
            .as_bytes(),
        content,
        format!("\r\n--{boundary}--\r\n").as_bytes(),
    ]
    .concat()
}

async fn upload(
    emu: &Emulator,
    user: &str,
    filename: &str,
    mime: &str,
    content: &[u8],
) -> CapturedResponse {
    let boundary = "----rawcaptureboundary7MA4YWxkTrZu0gW";
    let ct = format!("multipart/form-data; boundary={boundary}");
    let req = request(
        "POST",
        "/v1/files/upload",
        &[AUTH, ("Content-Type", &ct)],
        &multipart(boundary, user, filename, mime, content),
    );
    parse(&exchange(emu.addr(), req).await)
}

#[tokio::test]
async fn uploads_are_stored_and_served_through_signed_urls() {
    let png: &[u8] = b"\x89PNG\r\n\x1a\nfake image bytes \x00\xff";
    let opts = EmulatorOptions {
        file_upload: json!({"image": {"enabled": true, "number_limits": 3}}),
        ..fast()
    };
    let emu = start(opts).await;
    let resp = upload(&emu, "user-alice", "red-2x2.png", "image/png", png).await;
    assert_eq!(resp.status, 201);
    let file = json_of(&resp);
    assert_eq!(
        keys(&file),
        [
            "id",
            "name",
            "size",
            "extension",
            "mime_type",
            "created_by",
            "created_at"
        ]
    );
    assert_eq!(
        (
            file["name"].as_str(),
            file["size"].as_u64(),
            file["extension"].as_str()
        ),
        (Some("red-2x2.png"), Some(png.len() as u64), Some("png"))
    );
    let other = json_of(
        &upload(
            &emu,
            "user-alice",
            "notes.xyz",
            "application/octet-stream",
            b"hello",
        )
        .await,
    );
    assert_eq!(other["created_by"], file["created_by"], "same end user");
    assert_eq!(other["extension"], "xyz");
    let id = file["id"].as_str().unwrap();
    assert_eq!(emu.uploaded_file(id).unwrap().bytes.as_ref(), png);
    let recorded = emu
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/files/upload")
        .unwrap();
    assert_eq!(recorded.body_len, recorded.body.len());
    assert_eq!(recorded.user().as_deref(), Some("user-alice"));

    for url in [emu.signed_file_url(id), emu.signed_image_url(id)] {
        let served = call(&emu, "GET", &url, &[], "").await;
        assert_eq!(served.status, 200, "{url}");
        assert_eq!(header(&served, "content-type"), Some("image/png"));
        assert_eq!(served.chunks.concat(), png);
    }
    let tampered = format!("{}x", emu.signed_file_url(id));
    let denied = call(&emu, "GET", &tampered, &[], "").await;
    assert_eq!(
        (denied.status, body(&denied).as_str()),
        (
            404,
            "{\"code\": \"not_found\", \"message\": \"File not found or signature is invalid\", \"status\": 404}\n"
        )
    );
    assert_eq!(
        call(&emu, "GET", &format!("/files/{id}/file-preview"), &[], "")
            .await
            .status,
        404
    );
    let tool_tampered = format!(
        "{}x",
        emu.add_tool_file(Bytes::from_static(b"t"), "text/plain", "txt")
    );
    assert_eq!(call(&emu, "GET", &tool_tampered, &[], "").await.status, 403);
    let not_an_image = emu.signed_image_url(other["id"].as_str().unwrap());
    let refused = call(&emu, "GET", &not_an_image, &[], "").await;
    assert_eq!(
        (refused.status, body(&refused).as_str()),
        (
            415,
            "{\"code\": \"unsupported_file_type\", \"message\": \"File type not allowed.\", \"status\": 415}\n"
        )
    );
    let tool = emu.add_tool_file(Bytes::from_static(b"tool bytes"), "text/plain", "txt");
    let served = call(&emu, "GET", &tool, &[], "").await;
    assert_eq!((served.status, body(&served).as_str()), (200, "tool bytes"));

    let chat = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "What is in this image?", "user": "user-alice",
               "files": [{"type": "image", "transfer_method": "local_file", "upload_file_id": id}]}),
    )
    .await;
    let conversation = json_of(&chat)["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    let attached = &messages["data"][0]["message_files"][0];
    assert_eq!(
        keys(attached),
        [
            "id",
            "filename",
            "type",
            "url",
            "mime_type",
            "size",
            "transfer_method",
            "belongs_to"
        ]
    );
    let served = call(&emu, "GET", attached["url"].as_str().unwrap(), &[], "").await;
    assert_eq!(served.chunks.concat(), png);
    let bad = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "q", "user": "user-alice",
               "files": [{"type": "image", "transfer_method": "local_file", "upload_file_id": "6d31eee3-c172-45bd-8d9c-fcc6fd5f8211"}]}),
    )
    .await;
    assert_eq!(
        body(&bad),
        "{\"code\": \"invalid_param\", \"message\": \"Invalid upload file\", \"status\": 400}\n"
    );
}

#[tokio::test]
async fn files_are_dropped_when_the_app_has_upload_off() {
    let emu = start(fast()).await;
    let file = json_of(&upload(&emu, "user-alice", "red.png", "image/png", b"png").await);
    let chat = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "q", "user": "user-alice",
               "files": [{"type": "image", "transfer_method": "local_file", "upload_file_id": file["id"]}]}),
    )
    .await;
    let conversation = json_of(&chat)["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=user-alice&conversation_id={conversation}"),
        )
        .await,
    );
    assert_eq!(messages["data"][0]["message_files"], json!([]));
}

#[tokio::test]
async fn scripts_are_used_once_after_the_key_check_then_faithful_behaviour_resumes() {
    let emu = start(fast()).await;
    emu.script(
        "POST",
        "/chat-messages",
        Reply::json(502, &json!({"code": "x", "message": "ü"})),
    );
    let hi = json!({"inputs": {}, "query": "hi", "user": "u", "response_mode": "blocking"});
    let unauthorised = call(&emu, "POST", "/v1/chat-messages", &[JSON], &hi.to_string()).await;
    assert_eq!(
        unauthorised.status, 401,
        "the script waits for an authorised request"
    );
    let scripted = post(&emu, "/v1/chat-messages", hi.clone()).await;
    assert_eq!(
        (scripted.status, body(&scripted).as_str()),
        (502, "{\"code\": \"x\", \"message\": \"\\u00fc\"}\n")
    );
    assert_eq!(header(&scripted, "x-version"), Some("0.15.3"));
    assert_eq!(
        post(&emu, "/v1/chat-messages", hi.clone()).await.status,
        200
    );

    let requests = emu.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[1].user().as_deref(), Some("u"));
    assert_eq!(requests[1].json().unwrap()["query"], "hi");
    emu.clear_requests();
    assert!(emu.requests().is_empty());

    let events = vec![
        Bytes::from("data: {\"event\": \"message\", \"answer\": \"\\u00e9\"}\n\n"),
        Bytes::from_static(PING),
    ];
    emu.script(
        "POST",
        "/chat-messages",
        Reply::sse(events.clone()).rechunk_every(5),
    );
    let rechunked = post(&emu, "/v1/chat-messages", hi.clone()).await;
    assert_eq!(rechunked.chunks.concat(), events.concat());
    assert!(rechunked.chunks.iter().all(|c| c.len() <= 5));

    emu.script(
        "POST",
        "/chat-messages",
        Reply::sse(events.clone()).then(Step::Drop),
    );
    let wire = exchange(
        emu.addr(),
        request(
            "POST",
            "/v1/chat-messages",
            &[AUTH, JSON],
            hi.to_string().as_bytes(),
        ),
    )
    .await;
    let cut = parse_response(&[b"#### RESPONSE\n".as_slice(), &wire].concat());
    assert!(cut.is_err(), "no terminating chunk after a scripted drop");
    assert!(
        wire.ends_with(b"\r\nD\r\nevent: ping\n\n\r\n"),
        "every event before the drop arrived"
    );
    assert!(
        emu.dropped_streams().is_empty(),
        "a server-side drop is not a client drop"
    );

    emu.script(
        "POST",
        "/chat-messages",
        Reply {
            status: 200,
            headers: Vec::new(),
            steps: vec![Step::Drop],
        },
    );
    let nothing = exchange(
        emu.addr(),
        request(
            "POST",
            "/v1/chat-messages",
            &[AUTH, JSON],
            hi.to_string().as_bytes(),
        ),
    )
    .await;
    assert!(
        nothing.is_empty(),
        "a leading drop closes without a status line: {:?}",
        String::from_utf8_lossy(&nothing)
    );

    let capture_55 = b"#### REQUEST\nPOST /v1/chat-messages HTTP/1.1\r\n\r\n\n#### RESPONSE (exact bytes)\nHTTP/1.1 200 OK\r\nServer: gunicorn\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream; charset=utf-8\r\nX-Version: 0.15.3\r\n\r\n7\r\ndata: x\r\nD\r\nevent: ping\n\n\r\n0\r\n\r\n";
    emu.script(
        "POST",
        "/chat-messages",
        Reply::from_capture(capture_55).unwrap(),
    );
    let replayed = post(&emu, "/v1/chat-messages", hi.clone()).await;
    assert!(replayed.chunked);
    assert_eq!(
        replayed.chunks,
        vec![Bytes::from_static(b"data: x"), Bytes::from_static(PING)]
    );
    assert_eq!(header(&replayed, "server"), None);
}

#[tokio::test]
async fn held_requests_and_streams_are_counted_and_cut_at_shutdown() {
    let emu = start(fast()).await;
    let addr = emu.addr();
    emu.script("GET", "/parameters", Reply::hang_before_headers());
    emu.script(
        "GET",
        "/info",
        Reply::sse(vec![Bytes::from_static(PING)]).then(Step::Hang),
    );
    let held = tokio::spawn(exchange(
        addr,
        request("GET", "/v1/parameters", &[AUTH], b""),
    ));
    let hanging_stream = tokio::spawn(exchange(addr, request("GET", "/v1/info", &[AUTH], b"")));
    let seen = emu
        .wait_for_request(|r| r.path == "/v1/info", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(seen.method, "GET");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while emu.open_streams() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(emu.open_streams(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!held.is_finished() && !hanging_stream.is_finished());
    assert!(
        emu.wait_for_request(|r| r.path == "/v1/nothing", Duration::from_millis(20))
            .await
            .is_none()
    );

    emu.shutdown();
    let held = tokio::time::timeout(Duration::from_secs(2), held)
        .await
        .unwrap()
        .unwrap();
    assert!(held.is_empty(), "no status line was ever sent");
    let stream = tokio::time::timeout(Duration::from_secs(2), hanging_stream)
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&stream).contains("event: ping"));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn keep_alive_connections_are_closed_at_shutdown() {
    let emu = start(fast()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/meta", emu.base_url());
    let ok = client.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "{\"tool_icons\": {}}\n");
    drop(emu);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.get(&url).bearer_auth(KEY).send().await.is_err());
}

#[tokio::test]
async fn demo_mode_explains_itself() {
    let emu = start(EmulatorOptions {
        demo: true,
        ..fast()
    })
    .await;
    let parameters = json_of(&get(&emu, "/v1/parameters").await);
    assert!(
        parameters["opening_statement"]
            .as_str()
            .unwrap()
            .contains("demo")
    );
    assert_eq!(
        parameters["suggested_questions"].as_array().unwrap().len(),
        4
    );
    assert_eq!(
        json_of(&get(&emu, "/v1/info").await)["name"],
        "dify-bff demo"
    );
    let answer = blocking_chat(&emu, "visitor", "Hello?", None).await;
    assert!(
        answer["answer"]
            .as_str()
            .unwrap()
            .contains("built-in demo of dify-bff")
    );
}

fn demo_app() -> EmulatorOptions {
    EmulatorOptions {
        api_key: KEY.to_owned(),
        token_interval: Duration::from_millis(1),
        slow_interval: Duration::from_millis(50),
        ..EmulatorOptions::demo_app()
    }
}

#[tokio::test]
async fn the_demo_app_has_uploads_follow_ups_and_names_its_keywords() {
    let emu = start(demo_app()).await;
    let parameters = json_of(&get(&emu, "/v1/parameters").await);
    assert_eq!(parameters["file_upload"]["image"]["enabled"], true);
    assert_eq!(
        parameters["suggested_questions_after_answer"]["enabled"],
        true
    );
    let opening = parameters["opening_statement"].as_str().unwrap();
    for (keyword, _) in crate::DEMO_KEYWORDS {
        assert!(opening.contains(keyword), "{keyword} is not in {opening}");
    }
    let answer = blocking_chat(&emu, "visitor", "Hi", None).await;
    let id = answer["message_id"].as_str().unwrap();
    let suggested = json_of(&get(&emu, &format!("/v1/messages/{id}/suggested?user=visitor")).await);
    assert_eq!(suggested["result"], "success");
    assert!(suggested["data"][0].as_str().unwrap().contains("MARKDOWN"));
}

#[tokio::test]
async fn the_demos_markdown_answer_has_code_and_a_table() {
    let emu = start(demo_app()).await;
    let answer = blocking_chat(&emu, "visitor", "Show me MARKDOWN", None).await;
    let text = answer["answer"].as_str().unwrap();
    assert!(
        text.contains("```sh\nDIFY_API_KEY=app-your-key \\\n"),
        "{text}"
    );
    assert!(text.contains("|:---|:---|\n| `POST /chat` |"), "{text}");
}

#[tokio::test]
async fn the_demos_sourced_answer_cites_retriever_resources_like_dify() {
    let emu = start(demo_app()).await;
    let stream = post(
        &emu,
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "Answer with SOURCES", "user": "visitor", "response_mode": "streaming"}),
    )
    .await;
    let events = sse_events(&stream);
    let end = events.last().unwrap();
    assert_eq!(end["event"], "message_end");
    assert_eq!(keys(&end["metadata"]), ["retriever_resources", "usage"]);
    let sources = end["metadata"]["retriever_resources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["position"], 1);
    assert_eq!(sources[0]["document_name"], "README.md");
    assert!(
        sources[0]["content"]
            .as_str()
            .unwrap()
            .contains("never reach a browser")
    );

    let conversation = end["conversation_id"].as_str().unwrap();
    let messages = json_of(
        &get(
            &emu,
            &format!("/v1/messages?user=visitor&conversation_id={conversation}"),
        )
        .await,
    );
    assert_eq!(messages["data"][0]["retriever_resources"], json!(sources));
}

#[tokio::test]
async fn the_demos_long_answer_takes_many_slow_pieces() {
    let emu = start(demo_app()).await;
    let started = std::time::Instant::now();
    let answer = blocking_chat(&emu, "visitor", "a LONG one", None).await;
    let text = answer["answer"].as_str().unwrap();
    assert!(text.contains("try Stop"), "{text}");
    // 50 ms / 5 per piece here; the demo's 1 s / 5 makes it last about ten seconds.
    let pieces = text.split_whitespace().count().div_ceil(3);
    assert!(pieces >= 40, "{pieces} pieces");
    assert!(started.elapsed() >= Duration::from_millis(10) * 40);
}

#[tokio::test]
async fn demo_keywords_leave_the_capture_apps_answers_alone() {
    let emu = start(fast()).await;
    let answer = blocking_chat(&emu, "visitor", "MARKDOWN SOURCES LONG", None).await;
    assert_eq!(answer["answer"], DEFAULT_ANSWER_1);
    assert_eq!(keys(&answer["metadata"]), ["usage"]);
}

#[test]
fn the_readme_lists_every_demo_keyword() {
    let readme = include_str!("../../../README.md");
    for (keyword, _) in crate::DEMO_KEYWORDS {
        assert!(
            readme.contains(&format!("| `{keyword}` |")),
            "README's demo table lacks {keyword}"
        );
    }
}
