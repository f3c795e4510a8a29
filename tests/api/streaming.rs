//! The SSE relay: Dify's bytes reach the browser unchanged, in order, as they arrive, and a
//! stream that breaks gets exactly one closing error event.

use std::time::Duration;

use crate::support::{TestApp, fixture, fixture_body, read_stream, sse_events};
use bytes::Bytes;
use dify_emulator::{EmulatorOptions, Reply, Step};
use serde_json::json;

const CHAT: &str = "/chat-messages";

fn ask() -> serde_json::Value {
    json!({"query": "Tell me about streaming 🚀"})
}

/// An SSE-B (Dify ≥ 1.8.1) event: compact JSON with raw UTF-8.
fn utf8_event(n: usize, answer: &str) -> String {
    format!(
        "data: {{\"event\":\"message\",\"conversation_id\":\"aa0483db-e114-40ab-b70f-c2128bd443fa\",\"message_id\":\"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\",\"created_at\":1795662501,\"task_id\":\"f02dec3c-358c-4b01-9451-860821071dba\",\"id\":\"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\",\"answer\":\"{answer} #{n}\",\"from_variable_selector\":null}}\n\n"
    )
}

fn message_end() -> String {
    "data: {\"event\":\"message_end\",\"conversation_id\":\"aa0483db-e114-40ab-b70f-c2128bd443fa\",\"message_id\":\"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\",\"created_at\":1795662501,\"task_id\":\"f02dec3c-358c-4b01-9451-860821071dba\",\"id\":\"f3e2cd8a-f1d4-4370-b648-12d5e59a88e3\",\"metadata\":{\"usage\":{\"total_tokens\":18}},\"files\":null}\n\n".to_owned()
}

fn utf8_stream(events: usize) -> String {
    let mut s = String::new();
    for n in 0..events {
        s.push_str(&utf8_event(n, "Dify 是一个平台 🚀 — ünïcödé"));
    }
    s.push_str(&message_end());
    s
}

async fn relay(app: &TestApp, reply: Reply) -> (reqwest::Response, ()) {
    app.emulator.script("POST", CHAT, reply);
    (app.browser.chat_stream(&ask()).await, ())
}

#[tokio::test]
async fn every_streaming_capture_is_relayed_byte_for_byte() {
    let app = TestApp::spawn().await;
    for name in [
        "02-chat-streaming-new-conversation.http",
        "03-chat-streaming-continued-conversation.http",
        "55-upstream-500-streaming.http",
        "57-upstream-error-midstream-streaming.http",
        "69-chat-streaming-slow-complete-with-pings.http",
        "70-chat-streaming-keepalive-connection.http",
    ] {
        let reply = Reply::from_capture(&fixture(name)).expect("capture parses");
        let (response, ()) = relay(&app, reply).await;
        assert_eq!(response.status(), 200, "{name}");
        let body = read_stream(response).await;
        assert_eq!(body, fixture_body(name), "{name}: relayed bytes differ");
    }
}

#[tokio::test]
async fn streaming_response_has_sse_headers_and_no_hop_by_hop_or_compression() {
    let app = TestApp::spawn().await;
    let reply = Reply::from_capture(&fixture("02-chat-streaming-new-conversation.http")).unwrap();
    app.emulator.script("POST", CHAT, reply);
    let response = app
        .browser
        .request(reqwest::Method::POST, "/chat")
        .header("accept-encoding", "gzip, br")
        .json(&ask())
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    assert!(headers.get("content-length").is_none());
    for dify_only in [
        "x-version",
        "x-env",
        "server",
        "access-control-allow-origin",
    ] {
        assert!(
            headers.get(dify_only).is_none(),
            "{dify_only} copied from Dify"
        );
    }
    read_stream(response).await;
}

#[tokio::test]
async fn bytes_cut_inside_utf8_characters_and_lines_arrive_unchanged() {
    let app = TestApp::spawn().await;
    let stream = utf8_stream(1);
    for cut in [1, 2, 3, 7, 64] {
        let reply = Reply::sse(vec![Bytes::from(stream.clone())]).rechunk_every(cut);
        let (response, ()) = relay(&app, reply).await;
        let body = read_stream(response).await;
        assert_eq!(
            String::from_utf8(body).expect("valid UTF-8"),
            stream,
            "cut every {cut} bytes"
        );
    }
}

#[tokio::test]
async fn crlf_framing_passes_unchanged_and_counts_as_complete() {
    let app = TestApp::spawn().await;
    let stream = utf8_stream(3).replace("\n", "\r\n");
    let reply = Reply::sse(vec![Bytes::from(stream.clone())]).rechunk_every(9);
    let (response, ()) = relay(&app, reply).await;
    let body = read_stream(response).await;
    assert_eq!(
        body,
        stream.as_bytes(),
        "no error event appended to a complete CRLF stream"
    );
}

#[tokio::test]
async fn pings_pass_through_unchanged() {
    let app = TestApp::spawn().await;
    let chunks = vec![
        Bytes::from(utf8_event(1, "a")),
        Bytes::from_static(b"event: ping\n\n"),
        Bytes::from(utf8_event(2, "b")),
        Bytes::from_static(b"event: ping\n\n"),
        Bytes::from(message_end()),
    ];
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let (response, ()) = relay(&app, Reply::sse(chunks)).await;
    assert_eq!(read_stream(response).await, expected);
}

#[tokio::test]
async fn a_5000_event_stream_arrives_whole() {
    let app = TestApp::spawn().await;
    let stream = utf8_stream(5000);
    let reply = Reply::sse(vec![Bytes::from(stream.clone())]).rechunk_every(4096);
    let (response, ()) = relay(&app, reply).await;
    let body = read_stream(response).await;
    assert_eq!(body.len(), stream.len());
    assert!(body == stream.as_bytes());
    assert_eq!(sse_events(&body).len(), 5001);
}

#[tokio::test]
async fn each_event_reaches_the_client_before_dify_sends_the_next() {
    let app = TestApp::spawn().await;
    let first = utf8_event(1, "first");
    let second = utf8_event(2, "second");
    // Dify pauses, then never sends anything more: anything buffered would never arrive.
    let reply = Reply {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "text/event-stream; charset=utf-8".into(),
        )],
        steps: vec![
            Step::Send(Bytes::from(first.clone())),
            Step::Pause(Duration::from_millis(300)),
            Step::Send(Bytes::from(second.clone())),
            Step::Hang,
        ],
    };
    let (mut response, ()) = relay(&app, reply).await;
    let mut got = Vec::new();
    while got.len() < first.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the first event is not held back")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(
        got,
        first.as_bytes(),
        "the first event arrives alone, before the pause ends"
    );
    while got.len() < first.len() + second.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the second event is not held back")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(&got[first.len()..], second.as_bytes());
}

#[tokio::test]
async fn upstream_dropping_mid_line_gets_the_line_ended_and_one_error_event() {
    let app = TestApp::spawn().await;
    let event = utf8_event(1, "partial");
    let cut = event.len() / 2;
    let reply = Reply {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "text/event-stream; charset=utf-8".into(),
        )],
        steps: vec![
            Step::Send(Bytes::from(event[..cut].to_owned())),
            Step::Pause(Duration::from_millis(50)),
            Step::Drop,
        ],
    };
    let (response, ()) = relay(&app, reply).await;
    let body = String::from_utf8(read_stream(response).await).unwrap();
    let (head, tail) = body.split_at(cut);
    assert_eq!(head, &event[..cut], "bytes before the break are unchanged");
    assert!(
        tail.starts_with("\n\ndata: "),
        "the broken line is ended first: {tail:?}"
    );
    let events = sse_events(tail.as_bytes());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "error");
    assert_eq!(events[0]["code"], "upstream_disconnected");
    assert_eq!(events[0]["status"], 502);
}

#[tokio::test]
async fn a_clean_end_without_a_terminal_event_gets_the_error_event() {
    let app = TestApp::spawn().await;
    let event = utf8_event(1, "only");
    let (response, ()) = relay(&app, Reply::sse(vec![Bytes::from(event.clone())])).await;
    let body = read_stream(response).await;
    assert!(body.starts_with(event.as_bytes()));
    let events = sse_events(&body);
    let last = events.last().expect("events");
    assert_eq!(last["code"], "upstream_disconnected");
    assert_eq!(events.iter().filter(|e| e["event"] == "error").count(), 1);
}

#[tokio::test]
async fn a_complete_stream_gets_nothing_appended() {
    let app = TestApp::spawn().await;
    let stream = utf8_stream(2);
    let (response, ()) = relay(&app, Reply::sse(vec![Bytes::from(stream.clone())])).await;
    assert_eq!(read_stream(response).await, stream.as_bytes());
}

#[tokio::test]
async fn an_idle_upstream_ends_the_stream_with_upstream_timeout() {
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.stream_idle_timeout = Duration::from_millis(200);
    })
    .await;
    let event = utf8_event(1, "then silence");
    let reply = Reply {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "text/event-stream; charset=utf-8".into(),
        )],
        steps: vec![Step::Send(Bytes::from(event.clone())), Step::Hang],
    };
    let (response, ()) = relay(&app, reply).await;
    let body = read_stream(response).await;
    assert!(body.starts_with(event.as_bytes()));
    let events = sse_events(&body);
    let last = events.last().expect("events");
    assert_eq!(last["event"], "error");
    assert_eq!(last["code"], "upstream_timeout");
    assert_eq!(last["status"], 504);
}

#[tokio::test]
async fn an_error_before_the_stream_is_json_not_sse() {
    let app = TestApp::spawn().await;
    let reply = Reply::from_capture(&fixture(
        "49-error-streaming-nonexistent-conversation_id.http",
    ))
    .unwrap();
    app.emulator.script("POST", CHAT, reply);
    let res = app
        .browser
        .chat(&json!({"query": "hi", "conversation_id": "1c6ae8c6-0ba8-4b54-bd48-1d2d5e7b7ed2"}))
        .await;
    res.assert_error(404, "not_found");
}

#[tokio::test]
async fn the_real_emulated_stream_carries_our_user_and_explicit_response_mode() {
    let app = TestApp::spawn().await;
    let response = app
        .browser
        .chat_stream(&json!({"query": "hello", "user": "someone-else", "response_mode": null}))
        .await;
    let body = read_stream(response).await;
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap()["event"], "message_end");
    let sent = app.upstream_requests("/v1/chat-messages");
    let sent = sent.last().unwrap().json().unwrap();
    assert_eq!(sent["response_mode"], "streaming");
    assert_ne!(sent["user"], "someone-else");
    assert!(sent["user"].as_str().is_some_and(|u| !u.is_empty()));
}
