//! The Dify-compatible gateway at `/v1` (API.md §6): Dify's own Service API for end users, every
//! call pinned to the caller's identity, the client's key never forwarded, anything beyond the
//! end-user surface refused before it reaches Dify, answers relayed as Dify sent them.
//!
//! Decided where the contract is silent: only the body's top-level `user` is pinned (a `user`
//! inside `inputs` is the app's own variable and goes as sent); query parameters and multipart
//! fields named `user` in any case, percent-encoded or with `[]` are all dropped.

use std::time::Duration;

use bytes::Bytes;
use dify_emulator::{EmulatorOptions, Recorded, Reply};
use reqwest::Method;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

use crate::support::raw::raw;
use crate::support::{
    API_KEY, Browser, TestApp, TestResponse, assert_no_secret, assert_nothing_reached_dify,
    late_answer, leave_early, no_site_row, read_stream, sse_events, tokens_counted, usage, vars,
};

const SOON: Duration = Duration::from_secs(3);
const UNKNOWN_ID: &str = "f10714dc-ab52-47fc-acae-dbd8ca55db2b";

/// The Dify `user` this browser maps to, learnt from a call on our own route.
async fn our_user(app: &TestApp, browser: &Browser) -> String {
    assert_eq!(browser.get("/conversations").await.status, 200);
    app.upstream_requests("/v1/conversations")
        .last()
        .and_then(Recorded::user)
        .expect("the list call carries a user")
}

async fn gw_post(browser: &Browser, path: &str, body: &Value) -> TestResponse {
    browser
        .send(
            browser
                .request(Method::POST, path)
                .bearer_auth("bff")
                .json(body),
        )
        .await
}

async fn gw_get(browser: &Browser, path: &str) -> TestResponse {
    browser
        .send(browser.request(Method::GET, path).bearer_auth("bff"))
        .await
}

fn last(app: &TestApp, path: &str) -> Recorded {
    app.upstream_requests(path)
        .pop()
        .unwrap_or_else(|| panic!("Dify received no {path}"))
}

/// The top-level keys of a JSON object as sent, duplicates included.
fn top_level_keys(body: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(body)
        .expect("a JSON object")
        .0
}

/// The query's parameters as Flask decodes them.
fn query_pairs(recorded: &Recorded) -> Vec<(String, String)> {
    form_urlencoded::parse(recorded.query.as_deref().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// A chat answered through the gateway: `(conversation_id, message_id)`.
async fn gateway_chat(browser: &Browser) -> (String, String) {
    let res = gw_post(
        browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "Plan a trip", "response_mode": "blocking", "user": "x"}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer = res.json();
    (
        answer["conversation_id"].as_str().unwrap().to_owned(),
        answer["message_id"].as_str().unwrap().to_owned(),
    )
}

/// The first whole event of a stream, its bytes so far.
async fn read_until_event(response: &mut reqwest::Response) -> Value {
    let mut got = Vec::new();
    loop {
        if let Some(event) = sse_events(&got).into_iter().next() {
            return event;
        }
        let chunk = tokio::time::timeout(SOON, response.chunk())
            .await
            .expect("the first event arrives")
            .expect("stream readable")
            .expect("the stream does not end before its first event");
        got.extend_from_slice(&chunk);
    }
}

// ---------------------------------------------------------------------------------------------
// The allowed routes

#[tokio::test]
async fn app_settings_are_difys_bytes_unchanged() {
    let app = TestApp::spawn_with(
        vec![],
        EmulatorOptions {
            webapp_site: true,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let direct = reqwest::Client::new();
    for path in ["parameters", "info", "meta", "site"] {
        let ours = gw_get(&app.browser, &format!("/v1/{path}")).await;
        let dify = direct
            .get(format!("{}/{path}?user=someone", app.emulator.base_url()))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(ours.status, dify.status(), "{path}");
        assert_eq!(ours.header("content-type"), Some("application/json"));
        assert_eq!(
            ours.body,
            dify.bytes().await.unwrap(),
            "{path}: Dify's bytes"
        );
    }
}

#[tokio::test]
async fn chat_history_rename_variables_feedback_and_delete_work_as_on_dify() {
    let app = TestApp::spawn().await;
    let b = &app.browser;
    let (conversation, message) = gateway_chat(b).await;

    let list = gw_get(b, "/v1/conversations?limit=5").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"][0]["id"], conversation.as_str());

    let messages = gw_get(b, &format!("/v1/messages?conversation_id={conversation}")).await;
    assert_eq!(messages.status, 200);
    assert_eq!(messages.json()["data"][0]["id"], message.as_str());

    let rename = gw_post(
        b,
        &format!("/v1/conversations/{conversation}/name"),
        &json!({"name": "Lisbon"}),
    )
    .await;
    assert_eq!(rename.status, 200, "{}", rename.text());
    assert_eq!(rename.json()["name"], "Lisbon");

    let variables = gw_get(b, &format!("/v1/conversations/{conversation}/variables")).await;
    assert_eq!(variables.status, 200, "{}", variables.text());
    assert_eq!(variables.json()["data"], json!([]));

    let feedback = gw_post(
        b,
        &format!("/v1/messages/{message}/feedbacks"),
        &json!({"rating": "like"}),
    )
    .await;
    assert_eq!(feedback.json(), json!({"result": "success"}));

    let suggested = gw_get(b, &format!("/v1/messages/{message}/suggested")).await;
    suggested.assert_error(400, "bad_request");

    let delete = b
        .send(
            b.request(Method::DELETE, &format!("/v1/conversations/{conversation}"))
                .bearer_auth("bff")
                .json(&json!({"user": "x"})),
        )
        .await;
    assert!(delete.status.is_success(), "{}", delete.text());
    let after = gw_get(b, "/v1/conversations").await;
    assert_eq!(after.json()["data"], json!([]));

    let ours = our_user(&app, b).await;
    for r in app.emulator.requests() {
        assert_eq!(
            r.user().as_deref(),
            Some(ours.as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn another_identity_cannot_see_or_touch_a_conversation_through_the_gateway() {
    let app = TestApp::spawn().await;
    let (conversation, _) = gateway_chat(&app.browser).await;
    let mallory = app.new_browser();
    let list = gw_get(&mallory, "/v1/conversations?user=whoever").await;
    assert_eq!(list.json()["data"], json!([]));
    let rename = gw_post(
        &mallory,
        &format!("/v1/conversations/{conversation}/name"),
        &json!({"name": "mine now", "user": "whoever"}),
    )
    .await;
    rename.assert_error(404, "not_found");
}

#[tokio::test]
async fn completion_messages_answer_blocking_and_streaming() {
    let app = TestApp::spawn().await;
    let blocking = gw_post(
        &app.browser,
        "/v1/completion-messages",
        &json!({"inputs": {"query": "hi"}, "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(blocking.status, 200, "{}", blocking.text());
    assert_eq!(blocking.json()["mode"], "completion");

    let res = app
        .browser
        .request(Method::POST, "/v1/completion-messages")
        .json(&json!({"inputs": {}, "query": "hi", "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = sse_events(&read_stream(res).await);
    assert_eq!(events.first().unwrap()["event"], "message");
    assert_eq!(events.last().unwrap()["event"], "message_end");
}

#[tokio::test]
async fn a_workflow_run_streams_its_node_events_to_workflow_finished() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .request(Method::POST, "/v1/workflows/run")
        .json(&json!({"inputs": {"topic": "tides"}, "response_mode": "streaming", "user": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events = sse_events(&read_stream(res).await);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        &kinds[..3],
        ["workflow_started", "node_started", "node_finished"]
    );
    assert!(kinds.contains(&"text_chunk"));
    assert_eq!(kinds.last(), Some(&"workflow_finished"));
    assert_eq!(events.last().unwrap()["data"]["status"], "succeeded");

    let blocking = gw_post(
        &app.browser,
        "/v1/workflows/run",
        &json!({"inputs": {}, "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(blocking.json()["data"]["status"], "succeeded");
}

#[tokio::test]
async fn a_reattached_workflow_run_is_relayed_as_a_stream() {
    let app = TestApp::spawn().await;
    let path = format!("/workflow/{UNKNOWN_ID}/events");
    let body = "data: {\"event\": \"workflow_finished\", \"task_id\": \"t\", \"data\": {}}\n\n";
    app.emulator.script(
        "GET",
        &path,
        Reply::sse(vec![Bytes::from_static(body.as_bytes())]),
    );
    let res = gw_get(&app.browser, &format!("/v1{path}?user=evil")).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(res.text(), body);
    let sent = last(&app, &format!("/v1{path}"));
    assert_eq!(sent.user(), Some(our_user(&app, &app.browser).await));
}

#[tokio::test]
async fn upload_preview_and_speech_to_text_stream_files_through() {
    let app = TestApp::spawn().await;
    let b = &app.browser;
    let png = reqwest::multipart::Part::bytes(b"\x89PNG fake".to_vec())
        .file_name("a.png")
        .mime_str("image/png")
        .unwrap();
    let upload = b
        .send(
            b.request(Method::POST, "/v1/files/upload")
                .bearer_auth("bff")
                .multipart(reqwest::multipart::Form::new().part("file", png)),
        )
        .await;
    assert_eq!(upload.status, 201, "{}", upload.text());
    let id = upload.json()["id"].as_str().unwrap().to_owned();

    let preview = gw_get(b, &format!("/v1/files/{id}/preview")).await;
    assert_eq!(preview.status, 200);
    assert_eq!(preview.header("content-type"), Some("image/png"));
    assert_eq!(&preview.body[..], b"\x89PNG fake");

    let mp3 = reqwest::multipart::Part::bytes(vec![7u8; 2048])
        .file_name("note.mp3")
        .mime_str("audio/mpeg")
        .unwrap();
    let text = b
        .send(
            b.request(Method::POST, "/v1/audio-to-text")
                .multipart(reqwest::multipart::Form::new().part("file", mp3)),
        )
        .await;
    assert_eq!(text.status, 200, "{}", text.text());
    assert_eq!(text.json()["text"], "Transcript of note.mp3 (2048 bytes).");
}

#[tokio::test]
async fn text_to_audio_relays_difys_audio_bytes_and_type() {
    let app = TestApp::spawn().await;
    let res = gw_post(&app.browser, "/v1/text-to-audio", &json!({"text": "Hello"})).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("audio/mpeg"));
    let mut expected = dify_emulator::SPEECH_HEADER.to_vec();
    expected.extend_from_slice(b"Hello");
    assert_eq!(&res.body[..], &expected[..]);
}

#[tokio::test]
async fn each_stop_endpoint_reaches_its_own_dify_path_with_our_user() {
    let app = TestApp::spawn().await;
    let ours = our_user(&app, &app.browser).await;
    for path in [
        "/v1/chat-messages/t-1/stop",
        "/v1/completion-messages/t-1/stop",
        "/v1/workflows/tasks/t-1/stop",
    ] {
        let res = gw_post(&app.browser, path, &json!({"user": "someone-else"})).await;
        assert_eq!(res.json(), json!({"result": "success"}), "{path}");
        assert_eq!(last(&app, path).json(), Some(json!({"user": ours})));
    }
}

#[tokio::test]
async fn difys_errors_come_in_our_shape() {
    let app = TestApp::spawn().await;
    let res = gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"query": "no inputs", "response_mode": "blocking"}),
    )
    .await;
    res.assert_error(400, "invalid_param");
}

// ---------------------------------------------------------------------------------------------
// Identity pinning

#[tokio::test]
async fn a_user_in_the_json_body_is_replaced_by_ours_exactly_once() {
    let app = TestApp::spawn().await;
    let ours = our_user(&app, &app.browser).await;
    // `user` twice, once escaped, once in another case, once as an array, once nested.
    let body = r#"{"user": "mallory", "inputs": {"user": "kept"}, "query": "q", "us\u0065r": "eve", "User": "x", "user[]": ["y"], "response_mode": "blocking", "user": ["z"]}"#;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/chat-messages")
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = last(&app, "/v1/chat-messages");
    assert_eq!(
        top_level_keys(&sent.body),
        ["inputs", "query", "response_mode", "user"],
        "other fields in the client's order, one user: {}",
        String::from_utf8_lossy(&sent.body)
    );
    let sent = sent.json().unwrap();
    assert_eq!(sent["user"], ours.as_str());
    assert_eq!(
        sent["inputs"],
        json!({"user": "kept"}),
        "the app's own inputs go as sent"
    );
}

#[tokio::test]
async fn a_user_in_the_query_is_replaced_by_ours_however_encoded() {
    let app = TestApp::spawn().await;
    let ours = our_user(&app, &app.browser).await;
    let res = gw_get(
        &app.browser,
        "/v1/conversations?user=mallory&limit=5&us%65r=eve&user%5B%5D=x&USER=y&user=z&sort_by=-updated_at",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = query_pairs(&last(&app, "/v1/conversations"));
    let users: Vec<&String> = sent
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().starts_with("user"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(users, [&ours]);
    assert!(sent.contains(&("limit".into(), "5".into())));
    assert!(sent.contains(&("sort_by".into(), "-updated_at".into())));
}

#[tokio::test]
async fn a_user_field_in_a_multipart_upload_is_replaced_by_ours() {
    let app = TestApp::spawn().await;
    let ours = our_user(&app, &app.browser).await;
    let form = reqwest::multipart::Form::new()
        .text("user", "mallory")
        .text("USER", "eve")
        .text("us%65r", "x")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"hello".to_vec())
                .file_name("a.txt")
                .mime_str("text/plain")
                .unwrap(),
        );
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/files/upload")
                .multipart(form),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text());
    let sent = last(&app, "/v1/files/upload");
    let body = String::from_utf8_lossy(&sent.body).to_ascii_lowercase();
    assert_eq!(body.matches("name=\"user\"").count(), 1, "{body}");
    assert!(!body.contains("mallory") && !body.contains("eve") && !body.contains("us%65r"));
    assert_eq!(sent.user(), Some(ours));
}

/// Python's `requests` sends `files={"file": open(path, "rb")}` with no type: Dify refuses it.
#[tokio::test]
async fn an_uploaded_file_without_a_type_goes_without_one_and_gets_difys_415() {
    let app = TestApp::spawn().await;
    let untyped = reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("notes.txt");
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/files/upload")
                .multipart(reqwest::multipart::Form::new().part("file", untyped)),
        )
        .await;
    res.assert_error(415, "unsupported_file_type");
    let sent = String::from_utf8_lossy(&last(&app, "/v1/files/upload").body).to_ascii_lowercase();
    assert!(!sent.contains("content-type"), "{sent}");
}

/// Werkzeug files a part without a filename under the form's text fields, not as a file.
#[tokio::test]
async fn a_file_field_without_a_filename_is_no_upload() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new().text("file", "just text");
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/v1/files/upload")
                .multipart(form),
        )
        .await
        .assert_error(400, "no_file_uploaded");
    assert_nothing_reached_dify(&app);
}

fn png(name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(b"\x89PNG\r\n\x1a\n".to_vec())
        .file_name(name.to_owned())
        .mime_str("image/png")
        .unwrap()
}

async fn gw_upload(app: &TestApp, form: reqwest::multipart::Form) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/v1/files/upload")
                .multipart(form),
        )
        .await
}

/// Dify counts every file part of an upload, whatever its name (dify-protocol.md §9.1).
#[tokio::test]
async fn a_file_upload_with_a_file_before_its_file_is_too_many_files() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new()
        .part("other", png("a.png"))
        .part("file", png("b.png"));
    gw_upload(&app, form)
        .await
        .assert_error(400, "too_many_files");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_file_upload_with_a_file_after_its_file_is_too_many_files() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new()
        .part("file", png("a.png"))
        .text("note", "between")
        .part("file", png("b.png"));
    gw_upload(&app, form)
        .await
        .assert_error(400, "too_many_files");
}

#[tokio::test]
async fn text_fields_after_the_file_leave_the_upload_whole() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new()
        .part("file", png("a.png"))
        .text("note", "after");
    let res = gw_upload(&app, form).await;
    assert_eq!(res.status, 201, "{}", res.text());
}

#[tokio::test]
async fn in_header_mode_dify_sees_the_proxys_user() {
    let app = TestApp::spawn_with_env(vars(&[
        ("USER_HEADER", "X-Forwarded-User"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ]))
    .await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/v1/conversations?user=bob@example.com")
                .header("X-Forwarded-User", "alice@example.com"),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        last(&app, "/v1/conversations").user().as_deref(),
        Some("alice@example.com")
    );
    let anonymous = gw_get(&app.browser, "/v1/conversations").await;
    anonymous.assert_error(401, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// The client's key

#[tokio::test]
async fn any_bearer_or_none_is_accepted_and_only_our_key_reaches_dify() {
    let app = TestApp::spawn().await;
    for auth in [
        Some("Bearer bff"),
        Some("Bearer app-SomeoneElsesKey"),
        Some("Basic eDp5"),
        None,
    ] {
        let mut request = app.browser.request(Method::GET, "/v1/parameters");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let res = app.browser.send(request).await;
        assert_eq!(res.status, 200, "{auth:?}");
    }
    let sent = app.upstream_requests("/v1/parameters");
    assert_eq!(sent.len(), 4);
    for r in sent {
        let auths: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .collect();
        assert_eq!(auths.len(), 1);
        assert_eq!(auths[0].1, format!("Bearer {API_KEY}"));
    }
    let logs = crate::support::logs::captured();
    assert!(!logs.contains("SomeoneElsesKey") && !logs.contains("eDp5"));
}

// ---------------------------------------------------------------------------------------------
// Refused routes

#[tokio::test]
async fn routes_beyond_the_end_user_surface_are_404_and_reach_no_upstream() {
    let app = TestApp::spawn().await;
    let paths = [
        "/v1/app/feedbacks",
        "/v1/workflows/logs",
        &format!("/v1/workflows/run/{UNKNOWN_ID}"),
        &format!("/v1/end-users/{UNKNOWN_ID}"),
        "/v1/apps/annotations",
        "/v1/apps/annotation-reply/enable",
        "/v1/datasets",
        &format!("/v1/datasets/{UNKNOWN_ID}/documents"),
        "/v1/../app/feedbacks",
        "/v1/chat-messages/../app/feedbacks",
        "/v1/chat-messages/..%2F..%2Fapp%2Ffeedbacks",
        "/v1/app%2Ffeedbacks",
        "/v1//app/feedbacks",
        "/v1//chat-messages",
        "/v1/chat-messages/",
        "/v1/%61pp/feedbacks",
        "/v1",
        "/v1/",
    ];
    for path in paths {
        for method in ["GET", "POST", "DELETE"] {
            let res = raw(
                &app,
                method,
                path,
                "Authorization: Bearer bff\r\nContent-Length: 0\r\n",
            )
            .await;
            res.assert_error(404, "not_found");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn bad_ids_and_wrong_methods_are_refused_before_any_call() {
    let app = TestApp::spawn().await;
    for (method, path, status, code) in [
        ("DELETE", "/v1/conversations/%2e%2e", 404, "not_found"),
        ("DELETE", "/v1/conversations/abc", 404, "not_found"),
        (
            "POST",
            "/v1/messages/not-a-uuid/feedbacks",
            404,
            "not_found",
        ),
        ("POST", "/v1/chat-messages/a.b/stop", 400, "invalid_param"),
        ("GET", "/v1/files/../preview", 404, "not_found"),
        ("GET", "/v1/chat-messages", 405, "method_not_allowed"),
        ("DELETE", "/v1/conversations", 405, "method_not_allowed"),
    ] {
        let res = raw(&app, method, path, "Content-Length: 0\r\n").await;
        res.assert_error(status, code);
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_wrong_method_names_the_allowed_one() {
    let app = TestApp::spawn().await;
    for (method, path, allow) in [
        (Method::GET, "/v1/chat-messages".to_owned(), "POST"),
        (Method::POST, "/v1/parameters".to_owned(), "GET, HEAD"),
        (
            Method::GET,
            format!("/v1/conversations/{UNKNOWN_ID}"),
            "DELETE",
        ),
    ] {
        let res = app
            .browser
            .send(app.browser.request(method.clone(), &path))
            .await;
        res.assert_error(405, "method_not_allowed");
        assert_eq!(res.header("allow"), Some(allow), "{method} {path}");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn head_on_a_gateway_read_answers_dify_s_get_without_its_body() {
    let app = TestApp::spawn().await;
    let get = app
        .browser
        .send(app.browser.request(Method::GET, "/v1/parameters"))
        .await;
    let head = app
        .browser
        .send(app.browser.request(Method::HEAD, "/v1/parameters"))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), get.header("content-type"));
    assert!(head.body.is_empty());
    let calls = app.upstream_requests("/v1/parameters");
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|call| call.method == "GET"));
}

#[tokio::test]
async fn a_cross_site_gateway_write_is_refused_before_dify() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/chat-messages")
                .header("origin", "https://evil.example")
                .json(&json!({"inputs": {}, "query": "hi"})),
        )
        .await;
    res.assert_error(403, "forbidden");
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Streams and limits

#[tokio::test]
async fn a_gateway_stream_is_byte_identical_to_the_chat_relay() {
    let app = TestApp::spawn().await;
    let chunks = vec![
        Bytes::from_static(
            b"data: {\"event\": \"message\", \"task_id\": \"t\", \"answer\": \"\xe6",
        ),
        Bytes::from_static(b"\x98\xaf\"}\n\nevent: ping\n\n"),
        Bytes::from_static(b"data: {\"event\": \"message_end\", \"task_id\": \"t\"}\n\n"),
    ];
    app.emulator
        .script("POST", "/chat-messages", Reply::sse(chunks.clone()));
    app.emulator
        .script("POST", "/chat-messages", Reply::sse(chunks.clone()));
    let ours = read_stream(app.browser.chat_stream(&json!({"query": "hi"})).await).await;
    let gateway = read_stream(
        app.browser
            .request(Method::POST, "/v1/chat-messages")
            .json(&json!({"inputs": {}, "query": "hi", "response_mode": "streaming"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(gateway, ours);
    assert_eq!(gateway, chunks.concat());
}

/// Python's `requests` reads a stream's lines in the charset its `Content-Type` names, else in
/// ISO-8859-1; from 1.8.1 Dify streams raw UTF-8 (orjson) and names UTF-8.
#[tokio::test]
async fn a_gateway_stream_names_utf8_as_dify_does() {
    let app = TestApp::spawn().await;
    let chunks = vec![
        Bytes::from(
            "data: {\"event\":\"message\",\"task_id\":\"t\",\"answer\":\"是一个平台 🚀\"}\n\n",
        ),
        Bytes::from_static(b"data: {\"event\":\"message_end\",\"task_id\":\"t\"}\n\n"),
    ];
    app.emulator
        .script("POST", "/chat-messages", Reply::sse(chunks.clone()));
    let res = app
        .browser
        .request(Method::POST, "/v1/chat-messages")
        .json(&json!({"inputs": {}, "query": "hi", "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(read_stream(res).await, chunks.concat());
}

#[tokio::test]
async fn a_stream_cut_by_dify_ends_with_our_error_event() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/workflows/run",
        Reply::sse(vec![Bytes::from_static(
            b"data: {\"event\": \"workflow_started\", \"task_id\": \"t\"}\n\n",
        )]),
    );
    let res = app
        .browser
        .request(Method::POST, "/v1/workflows/run")
        .json(&json!({"inputs": {}, "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&read_stream(res).await);
    assert_eq!(events.last().unwrap()["code"], "upstream_disconnected");
}

async fn leaves_mid_stream_and_dify_is_stopped(path: &str, body: Value, stop: &str) {
    let app = TestApp::spawn().await;
    let ours = our_user(&app, &app.browser).await;
    let mut response = app
        .browser
        .request(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let event = read_until_event(&mut response).await;
    let task_id = event["task_id"].as_str().expect("task_id").to_owned();
    drop(response);
    let stop_path = stop.replace("{task}", &task_id);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path == stop_path, SOON)
        .await
        .unwrap_or_else(|| panic!("{stop_path} is called when the client leaves"));
    assert_eq!(stop.json(), Some(json!({"user": ours})));
}

#[tokio::test]
async fn leaving_a_chat_stream_calls_the_chat_stop() {
    leaves_mid_stream_and_dify_is_stopped(
        "/v1/chat-messages",
        json!({"inputs": {}, "query": "SLOW", "response_mode": "streaming"}),
        "/v1/chat-messages/{task}/stop",
    )
    .await;
}

#[tokio::test]
async fn leaving_a_completion_stream_calls_the_completion_stop() {
    leaves_mid_stream_and_dify_is_stopped(
        "/v1/completion-messages",
        json!({"inputs": {}, "query": "SLOW", "response_mode": "streaming"}),
        "/v1/completion-messages/{task}/stop",
    )
    .await;
}

#[tokio::test]
async fn leaving_a_workflow_stream_calls_the_workflow_task_stop() {
    leaves_mid_stream_and_dify_is_stopped(
        "/v1/workflows/run",
        json!({"inputs": {"text": "SLOW"}, "response_mode": "streaming"}),
        "/v1/workflows/tasks/{task}/stop",
    )
    .await;
}

#[tokio::test]
async fn generations_share_the_chat_rate_limit() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    let body = json!({"inputs": {}, "query": "hi", "response_mode": "blocking"});
    assert_eq!(app.browser.chat(&body).await.status, 200);
    assert_eq!(
        gw_post(&app.browser, "/v1/completion-messages", &body)
            .await
            .status,
        200
    );
    let res = gw_post(&app.browser, "/v1/workflows/run", &body).await;
    res.assert_error(429, "rate_limited");
    assert!(res.header("retry-after").is_some());
    assert!(app.upstream_requests("/v1/workflows/run").is_empty());
}

#[tokio::test]
async fn an_open_gateway_stream_holds_a_stream_slot() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_STREAMS_PER_IDENTITY", "1")])).await;
    let mut open = app
        .browser
        .request(Method::POST, "/v1/workflows/run")
        .json(&json!({"inputs": {"q": "SLOW"}, "response_mode": "streaming"}))
        .send()
        .await
        .unwrap();
    read_until_event(&mut open).await;
    let blocked = gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "hi", "response_mode": "blocking"}),
    )
    .await;
    blocked.assert_error(429, "rate_limited");
    drop(open);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_while_streaming() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_UPLOAD_BYTES", "4096")])).await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::stream(vec![0u8; 64 * 1024])
            .file_name("big.mp3")
            .mime_str("audio/mpeg")
            .unwrap(),
    );
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/audio-to-text")
                .multipart(form),
        )
        .await;
    res.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn nothing_the_gateway_answers_shows_the_key() {
    let app = TestApp::spawn().await;
    let (conversation, _) = gateway_chat(&app.browser).await;
    for path in [
        "/v1/parameters".to_owned(),
        "/v1/conversations".to_owned(),
        format!("/v1/messages?conversation_id={conversation}"),
        "/v1/nope".to_owned(),
    ] {
        let res = gw_get(&app.browser, &path).await;
        assert_no_secret(&path, &res.body);
    }
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::json(
            401,
            &json!({"code": "unauthorized", "message": "Access token is invalid", "status": 401}),
        ),
    );
    let refused = gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "q"}),
    )
    .await;
    refused.assert_error(502, "upstream_unavailable");
}

/// A streamed gateway call's events, read to the end.
async fn gw_events(browser: &Browser, path: &str, body: &Value) -> Vec<Value> {
    let res = browser
        .request(Method::POST, path)
        .bearer_auth("bff")
        .json(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    sse_events(&read_stream(res).await)
}

#[tokio::test]
async fn a_streamed_gateway_chat_counts_against_the_budget_and_over_it_is_refused() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1")])).await;
    let events = gw_events(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "spend", "response_mode": "streaming"}),
    )
    .await;
    let spent = events
        .iter()
        .find(|e| e["event"] == "message_end")
        .and_then(|e| e["metadata"]["usage"]["total_tokens"].as_u64())
        .unwrap();
    assert_eq!(tokens_counted(&app.browser, spent).await, spent);

    let body = json!({"inputs": {}, "query": "more", "response_mode": "blocking"});
    for path in [
        "/v1/chat-messages",
        "/v1/completion-messages",
        "/v1/workflows/run",
    ] {
        let refused = gw_post(&app.browser, path, &body).await;
        refused.assert_error(429, "budget_exceeded");
        assert!(refused.header("retry-after").is_some());
    }
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 1);
    assert!(app.upstream_requests("/v1/completion-messages").is_empty());
    assert!(app.upstream_requests("/v1/workflows/run").is_empty());
}

#[tokio::test]
async fn a_blocking_gateway_completion_counts_against_the_budget_once() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    let answer = gw_post(
        &app.browser,
        "/v1/completion-messages",
        &json!({"inputs": {"query": "spend"}, "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let spent = answer.json()["metadata"]["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(tokens_counted(&app.browser, spent).await, spent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], spent, "once");
    assert_eq!(
        usage(&app.new_browser()).await["tokens_used"],
        0,
        "per identity"
    );
}

#[tokio::test]
async fn a_blocking_gateway_chat_counts_against_the_budget_when_its_client_leaves_before_the_answer()
 {
    let app = TestApp::spawn_with(
        vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")]),
        EmulatorOptions {
            slow_interval: Duration::from_millis(20),
            ..EmulatorOptions::default()
        },
    )
    .await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    leave_early(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "SLOW", "response_mode": "blocking"}),
        Duration::from_millis(150),
    )
    .await;
    tokens_counted(&app.browser, 1).await;
}

#[tokio::test]
async fn a_streamed_gateway_chat_left_before_its_end_counts_what_dify_spent_until_it_stopped() {
    let app = TestApp::spawn_with(
        vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")]),
        EmulatorOptions {
            slow_interval: Duration::from_millis(20),
            ..EmulatorOptions::default()
        },
    )
    .await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    let mut response = app
        .browser
        .request(Method::POST, "/v1/chat-messages")
        .bearer_auth("bff")
        .json(&json!({"inputs": {}, "query": "SLOW", "response_mode": "streaming"}))
        .send()
        .await
        .expect("sent");
    let first = tokio::time::timeout(SOON, response.chunk()).await;
    assert!(
        first.is_ok_and(|c| c.is_ok_and(|c| c.is_some())),
        "the answer had begun"
    );
    drop(response);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), SOON)
        .await;
    assert!(stop.is_some(), "Dify is asked to stop");
    tokens_counted(&app.browser, 1).await;
}

#[tokio::test]
async fn a_streamed_gateway_chat_left_before_difys_first_byte_still_counts_what_dify_spent() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    app.emulator.script(
        "POST",
        "/chat-messages",
        late_answer(Duration::from_millis(600), 1234),
    );
    leave_early(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "write me a novel", "response_mode": "streaming"}),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(tokens_counted(&app.browser, 1234).await, 1234);
}

#[tokio::test]
async fn a_streamed_gateway_chat_left_after_a_ping_is_stopped_at_its_first_event_and_counted() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    // A chatflow's stream: a ping at once, its first event once a worker takes the run (4 s).
    let mut reply = late_answer(Duration::ZERO, 1234);
    reply.steps[0] = dify_emulator::Step::Send(Bytes::from_static(b"event: ping\n\n"));
    reply
        .steps
        .insert(1, dify_emulator::Step::Pause(Duration::from_secs(4)));
    app.emulator.script("POST", "/chat-messages", reply);
    let mut response = app
        .browser
        .request(Method::POST, "/v1/chat-messages")
        .bearer_auth("bff")
        .json(&json!({"inputs": {}, "query": "write me a novel", "response_mode": "streaming"}))
        .send()
        .await
        .expect("the stream starts");
    let ping = response.chunk().await.expect("readable").expect("a ping");
    assert!(ping.starts_with(b"event: ping"), "{ping:?}");
    drop(response);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(6))
        .await;
    assert!(
        stop.is_some(),
        "Dify is asked to stop once the task is named"
    );
    assert_eq!(tokens_counted(&app.browser, 1234).await, 1234);
}

#[tokio::test]
async fn a_blocking_workflow_run_counts_its_total_tokens() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    let answer = gw_post(
        &app.browser,
        "/v1/workflows/run",
        &json!({"inputs": {}, "response_mode": "blocking"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let spent = answer.json()["data"]["total_tokens"].as_u64().unwrap();
    assert_eq!(tokens_counted(&app.browser, spent).await, spent);
}

#[tokio::test]
async fn a_blocking_workflow_run_slower_than_the_request_deadline_is_504_and_still_counted() {
    let app = TestApp::spawn_with_env(vars(&[
        ("TOKEN_BUDGET_PER_DAY", "1000000"),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
    ]))
    .await;
    let mut reply = Reply::json(
        200,
        &json!({"task_id": "t", "workflow_run_id": "r",
                "data": {"id": "r", "status": "succeeded", "outputs": {}, "total_tokens": 4321, "total_steps": 3}}),
    );
    reply
        .steps
        .insert(0, dify_emulator::Step::Pause(Duration::from_millis(1500)));
    app.emulator.script("POST", "/workflows/run", reply);
    gw_post(
        &app.browser,
        "/v1/workflows/run",
        &json!({"inputs": {}, "response_mode": "blocking"}),
    )
    .await
    .assert_error(504, "upstream_timeout");
    assert_eq!(tokens_counted(&app.browser, 4321).await, 4321);
}

#[tokio::test]
async fn a_streamed_workflow_run_counts_workflow_finished_total_tokens_once() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    let events = gw_events(
        &app.browser,
        "/v1/workflows/run",
        &json!({"inputs": {}, "response_mode": "streaming"}),
    )
    .await;
    let spent = events.last().unwrap()["data"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(tokens_counted(&app.browser, spent).await, spent);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], spent, "once");
}

// ---------------------------------------------------------------------------------------------
// Clients written by others: Dify's official Node and Python SDKs, the Vercel AI SDK

/// What runs a client script, and where `.ci/run` installs its packages.
#[derive(Clone, Copy)]
enum Runtime {
    /// `node`; packages in `tests/clients/node_modules` (`npm ci --prefix tests/clients`).
    Node,
    /// `python3`; packages (import names) in `target/pyclient`, pinned by
    /// `tests/clients/requirements.txt`.
    Python,
}

impl Runtime {
    fn program(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Python => "python3",
        }
    }

    fn packages_dir(self) -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        match self {
            Runtime::Node => root.join("tests/clients/node_modules"),
            Runtime::Python => root.join("target/pyclient"),
        }
    }

    fn installed(self, package: &str) -> bool {
        let dir = self.packages_dir().join(package);
        match self {
            Runtime::Node => dir.join("package.json").exists(),
            Runtime::Python => dir.join("__init__.py").exists(),
        }
    }

    fn install(self) -> &'static str {
        match self {
            Runtime::Node => "npm ci --prefix tests/clients",
            Runtime::Python => {
                "python3 -m pip install --target target/pyclient -r tests/clients/requirements.txt"
            }
        }
    }
}

/// Runs `{runtime} tests/clients/{script} {base}` with `packages` installed where `.ci/run`
/// puts them, and checks that it printed `"ok":true` and no secret. Without the runtime or
/// `packages` it says so loudly and gives `None`, except under `CI=true`, where it fails.
async fn run_client(
    runtime: Runtime,
    script: &str,
    packages: &[&str],
    base: &str,
) -> Option<String> {
    let program = runtime.program();
    let script_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let present = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = packages.iter().find(|p| !runtime.installed(p));
    if !present || missing.is_some() {
        let why = match missing {
            Some(package) if present => format!(
                "the {package} package is not installed (run `{}`)",
                runtime.install()
            ),
            _ => format!("{program} is not on PATH"),
        };
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {script} cannot run: {why}"
        );
        eprintln!("\n*** SKIPPING the {script} client test: {why} ***\n");
        return None;
    }
    let mut command = tokio::process::Command::new(program);
    command.arg(&script_path).arg(base);
    if let Runtime::Python = runtime {
        command.env("PYTHONPATH", runtime.packages_dir());
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the client script finishes within 60 s")
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert_no_secret("the client's output", &output.stdout);
    assert_no_secret("the client's errors", &output.stderr);
    Some(stdout)
}

/// After an SDK run in cookie mode: every call reached Dify (at least `calls`), all as one
/// identity (the kept cookie, never the SDK's own `user`), each with our key.
fn assert_one_kept_identity_with_our_key(app: &TestApp, calls: usize) {
    let received = app.emulator.requests();
    assert!(received.len() >= calls, "every SDK call reached Dify");
    let first = received[0].user().expect("a user");
    for r in &received {
        let user = r.user();
        assert_eq!(
            user.as_ref(),
            Some(&first),
            "{} {}: one identity (the kept cookie)",
            r.method,
            r.path
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
    assert!(
        !first.contains("sdk-user"),
        "the SDK's own user never reaches Dify"
    );
}

/// Drives `dify-client` with only its base URL changed and a placeholder key: parameters,
/// blocking and streaming chat, history, rename, feedback, upload, delete.
#[tokio::test]
async fn the_official_node_sdk_works_with_only_its_base_url_changed() {
    let app = TestApp::spawn().await;
    let base = format!("{}/v1", app.base);
    if run_client(Runtime::Node, "dify-client.mjs", &["dify-client"], &base)
        .await
        .is_none()
    {
        return;
    }
    assert_one_kept_identity_with_our_key(&app, 9);
}

/// Drives Dify's Python SDK (`dify-client` on PyPI) with only its base URL changed and a
/// placeholder key, as a Python app uses it: parameters, meta and info, blocking, streamed and
/// continued chat, an upload and a chat with it, history, rename, feedback, suggested
/// questions, stop, a completion, a workflow run and delete (tests/clients/dify_client.py).
#[tokio::test]
async fn the_official_python_sdk_works_with_only_its_base_url_changed() {
    let mut options = EmulatorOptions {
        suggested_questions_after_answer: true,
        ..EmulatorOptions::default()
    };
    options.file_upload["image"]["enabled"] = json!(true);
    let app = TestApp::spawn_with(vec![], options).await;
    let base = format!("{}/v1", app.base);
    let packages = ["dify_client", "requests"];
    if run_client(Runtime::Python, "dify_client.py", &packages, &base)
        .await
        .is_none()
    {
        return;
    }
    assert_one_kept_identity_with_our_key(&app, 20);
}

/// The Vercel AI SDK with the community `dify-ai-provider`, server-side as it runs, in header
/// mode: a blocking answer, the conversation continued streamed, and another user refused it.
#[tokio::test]
async fn the_vercel_ai_sdk_provider_works_in_header_mode_with_only_its_base_url_changed() {
    let app = TestApp::spawn_with_env(vars(&[
        ("USER_HEADER", "X-Forwarded-User"),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ]))
    .await;
    let base = format!("{}/v1", app.base);
    if run_client(
        Runtime::Node,
        "vercel-ai.mjs",
        &["ai", "dify-ai-provider"],
        &base,
    )
    .await
    .is_none()
    {
        return;
    }
    let sent = app.upstream_requests("/v1/chat-messages");
    let users: Vec<_> = sent.iter().map(|r| r.user()).collect();
    assert_eq!(
        users,
        [
            Some("alice@example.com".to_owned()),
            Some("alice@example.com".to_owned()),
            Some("bob@example.com".to_owned())
        ],
        "the header's user, never the provider's own"
    );
    for r in &sent {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
}

#[tokio::test]
async fn an_endpoint_the_dify_version_lacks_is_difys_404_not_a_502() {
    let app = TestApp::spawn().await;
    let dify = reqwest::Client::new()
        .get(format!("{}/site?user=someone", app.emulator.base_url()))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(dify.status(), 404, "Dify 0.15 itself has no /site");
    gw_get(&app.browser, "/v1/site")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_403_about_the_request_is_relayed_not_turned_into_a_502() {
    let app = TestApp::spawn().await;
    let path = format!("/v1/files/{UNKNOWN_ID}/preview");
    app.emulator.script(
        "GET",
        &path,
        Reply::json(
            403,
            &json!({"code": "file_access_denied", "message": "File access denied: not owned by requesting app", "status": 403}),
        ),
    );
    gw_get(&app.browser, &path)
        .await
        .assert_error(403, "file_access_denied");
}

#[tokio::test]
async fn a_clients_trace_id_in_the_body_is_the_one_dify_records() {
    let app = TestApp::spawn().await;
    let res = gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "hi", "response_mode": "blocking", "trace_id": "client-trace-42"}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = app.upstream_requests("/v1/chat-messages");
    assert_eq!(sent[0].json().unwrap()["trace_id"], "client-trace-42");
    // Dify takes the header over the body's: ours must not hide the client's.
    assert_eq!(sent[0].header("x-trace-id"), Some("client-trace-42"));
}

#[tokio::test]
async fn a_clients_x_trace_id_header_goes_to_dify_and_an_invalid_one_does_not() {
    let app = TestApp::spawn().await;
    for (given, sent) in [("trace_1-A", "trace_1-A"), ("not valid!", "")] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::GET, "/v1/parameters")
                    .bearer_auth("bff")
                    .header("x-trace-id", given),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let got = app.upstream_requests("/v1/parameters");
        let header = got
            .last()
            .and_then(|r| r.header("x-trace-id"))
            .unwrap_or_default();
        if sent.is_empty() {
            assert_ne!(
                header, given,
                "an id Dify would drop is not sent as the client's"
            );
        } else {
            assert_eq!(header, sent);
        }
    }
}

#[tokio::test]
async fn a_preflight_for_difys_x_trace_id_header_is_allowed() {
    let origin = "https://app.example";
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", origin)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::OPTIONS, "/v1/chat-messages")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type,x-trace-id",
                ),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.status);
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for wanted in ["authorization", "content-type", "x-trace-id"] {
        assert!(allowed.contains(wanted), "{wanted} not in {allowed:?}");
    }
}

#[tokio::test]
async fn an_upload_or_recording_without_its_file_part_gets_difys_code() {
    let app = TestApp::spawn().await;
    for (path, code) in [
        ("/v1/files/upload", "no_file_uploaded"),
        ("/v1/audio-to-text", "bad_request_key_error"),
    ] {
        let form = reqwest::multipart::Form::new().text("user", "x");
        app.browser
            .send(
                app.browser
                    .request(Method::POST, path)
                    .bearer_auth("bff")
                    .multipart(form),
            )
            .await
            .assert_error(400, code);
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_previewed_html_file_cannot_script_our_origin() {
    let app = TestApp::spawn().await;
    let page = reqwest::multipart::Part::bytes(b"<script>steal()</script>".to_vec())
        .file_name("x.html")
        .mime_str("text/html")
        .unwrap();
    let upload = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/v1/files/upload")
                .multipart(reqwest::multipart::Form::new().part("file", page)),
        )
        .await;
    let id = upload.json()["id"].as_str().unwrap().to_owned();
    let preview = gw_get(&app.browser, &format!("/v1/files/{id}/preview")).await;
    assert_eq!(preview.status, 200);
    assert!(
        preview
            .header("content-security-policy")
            .is_some_and(|c| c.contains("sandbox"))
    );
    assert_eq!(preview.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn a_json_body_over_the_limit_is_413_before_dify() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_BODY_BYTES", "1024")])).await;
    let res = gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "x".repeat(4096)}),
    )
    .await;
    res.assert_error(413, "payload_too_large");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_gateway_get_is_retried_after_a_502_like_our_own() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "GET",
        "/conversations",
        Reply::html(502, "<h1>Bad Gateway</h1>"),
    );
    let res = gw_get(&app.browser, "/v1/conversations").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(app.upstream_requests("/v1/conversations").len(), 2);
}

const LOGIN_PAGE: &str = "<!doctype html><html><body><h1>Sign in to continue</h1></body></html>";

#[tokio::test]
async fn an_html_page_answered_200_to_a_gateway_read_is_502_not_relayed() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("GET", "/conversations", Reply::html(200, LOGIN_PAGE));
    let res = gw_get(&app.browser, "/v1/conversations").await;
    res.assert_error(502, "upstream_unavailable");
    assert!(!res.text().contains("Sign in"), "the page is not relayed");
}

#[tokio::test]
async fn an_html_page_answered_200_to_a_gateway_stream_is_502_not_a_stream() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("POST", "/chat-messages", Reply::html(200, LOGIN_PAGE));
    gw_post(
        &app.browser,
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "hi", "response_mode": "streaming"}),
    )
    .await
    .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn site_of_an_app_without_webapp_settings_is_404_not_found_on_the_gateway() {
    let app = TestApp::spawn().await;
    app.emulator.script("GET", "/v1/site", no_site_row());
    gw_get(&app.browser, "/v1/site")
        .await
        .assert_error(404, "not_found");
}
