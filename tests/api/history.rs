//! Blocking chat, conversation lists and message history through the proxy.

use crate::support::{TestApp, fixture, fixture_body};
use dify_emulator::Reply;
use serde_json::json;

#[tokio::test]
async fn a_blocking_answer_is_difys_json_unchanged() {
    let app = TestApp::spawn().await;
    let name = "01-chat-blocking-new-conversation.http";
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::from_capture(&fixture(name)).unwrap(),
    );
    let res = app
        .browser
        .chat(&json!({"query": "hi", "response_mode": "blocking"}))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.body.to_vec(), fixture_body(name));
}

#[tokio::test]
async fn a_second_turn_forwards_the_conversation_id() {
    let app = TestApp::spawn().await;
    let first = app.browser.chat_blocking("first turn", "").await;
    let conversation = first["conversation_id"].as_str().unwrap();
    let second = app.browser.chat_blocking("second turn", conversation).await;
    assert_eq!(second["conversation_id"], conversation);
    let sent = app.upstream_requests("/v1/chat-messages");
    assert_eq!(sent[0].json().unwrap()["conversation_id"], "");
    assert_eq!(sent[1].json().unwrap()["conversation_id"], conversation);
    assert_eq!(sent[1].json().unwrap()["response_mode"], "blocking");
}

#[tokio::test]
async fn conversations_and_messages_list_what_this_browser_said() {
    let app = TestApp::spawn().await;
    let first = app.browser.chat_blocking("what is dify?", "").await;
    let conversation = first["conversation_id"].as_str().unwrap();
    app.browser.chat_blocking("and then?", conversation).await;

    let list = app
        .browser
        .get("/conversations?limit=5&sort_by=-updated_at")
        .await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["limit"], 5);
    assert_eq!(list["data"][0]["id"], conversation);

    let messages = app
        .browser
        .get(&format!(
            "/messages?conversation_id={conversation}&limit=20"
        ))
        .await
        .json();
    let queries: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["query"].as_str().unwrap())
        .collect();
    assert_eq!(queries, ["what is dify?", "and then?"], "oldest first");
}

#[tokio::test]
async fn history_paging_parameters_are_forwarded_with_our_user() {
    let app = TestApp::spawn().await;
    let first = app.browser.chat_blocking("one", "").await;
    let conversation = first["conversation_id"].as_str().unwrap();
    let second = app.browser.chat_blocking("two", conversation).await;
    let newest = second["message_id"].as_str().unwrap();
    let page = app
        .browser
        .get(&format!(
            "/messages?conversation_id={conversation}&first_id={newest}&limit=1"
        ))
        .await
        .json();
    assert_eq!(page["data"][0]["query"], "one");
    let sent = app.upstream_requests("/v1/messages");
    let sent = sent.last().unwrap();
    assert_eq!(sent.query_param("first_id").as_deref(), Some(newest));
    assert_eq!(sent.query_param("limit").as_deref(), Some("1"));
    assert!(sent.query_param("user").is_some());
}

#[tokio::test]
async fn list_parameters_are_checked_before_any_upstream_call() {
    let app = TestApp::spawn().await;
    for path in [
        "/conversations?limit=0",
        "/conversations?limit=101",
        "/conversations?limit=abc",
        "/conversations?last_id=not-a-uuid",
        "/conversations?sort_by=name",
        "/messages",
        "/messages?conversation_id=abc",
        "/messages?conversation_id=1c6ae8c6-0ba8-4b54-bd48-1d2d5e7b7ed2&first_id=x",
        "/messages?conversation_id=1c6ae8c6-0ba8-4b54-bd48-1d2d5e7b7ed2&limit=1000",
    ] {
        app.browser
            .get(path)
            .await
            .assert_error(400, "invalid_param");
    }
    assert_eq!(app.upstream_count(), 0, "no call reached Dify");
}

#[tokio::test]
async fn bad_chat_bodies_are_refused_before_any_upstream_call() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({"query": ""}),
        json!({"query": "   "}),
        json!({"query": 42}),
        json!({"query": "q", "conversation_id": "abc"}),
        json!({"query": "q", "inputs": "x"}),
        json!({"query": "q", "inputs": []}),
        json!({"query": "q", "files": "x"}),
        json!({"query": "q", "response_mode": "fast"}),
    ] {
        app.browser
            .chat(&body)
            .await
            .assert_error(400, "invalid_param");
    }
    let not_object = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::POST, "/chat")
                .header("content-type", "application/json")
                .body("[1, 2]"),
        )
        .await;
    not_object.assert_error(400, "invalid_param");
    let not_json = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::POST, "/chat")
                .header("content-type", "application/json")
                .body("{\"query\": "),
        )
        .await;
    not_json.assert_error(400, "invalid_param");
    let form = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::POST, "/chat")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("query=hi"),
        )
        .await;
    form.assert_error(415, "unsupported_media_type");
    let huge = "x".repeat(1_048_577);
    app.browser
        .chat(&json!({"query": huge}))
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(app.upstream_count(), 0, "no call reached Dify");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json_errors() {
    let app = TestApp::spawn().await;
    app.browser
        .get("/nope/nothing")
        .await
        .assert_error(404, "not_found");
    app.browser
        .post_json("/nope", &json!({}))
        .await
        .assert_error(404, "not_found");
    app.browser
        .get("/chat")
        .await
        .assert_error(405, "method_not_allowed");
    app.browser
        .delete("/conversations")
        .await
        .assert_error(405, "method_not_allowed");
}
