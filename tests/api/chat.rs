//! The chat surface beyond `POST /chat`: stop (asked for, and when the browser leaves),
//! conversations (rename, auto-rename, delete), feedback, suggestions and the app settings.
//! Each call reaches Dify with our `user`; bad input never reaches it; another identity's
//! things stay out of reach.

use std::time::Duration;

use crate::support::{Browser, TestApp, fixture, fixture_body, read_stream, sse_events};
use dify_emulator::{EmulatorOptions, Recorded, Reply, Step};
use reqwest::Method;
use serde_json::{Value, json};

/// A liveness bound for things that happen "at once" (stop calls, closed connections).
const SOON: Duration = Duration::from_secs(2);
/// How long we watch for a call that must not come.
const QUIET: Duration = Duration::from_millis(500);
const UNKNOWN_ID: &str = "f10714dc-ab52-47fc-acae-dbd8ca55db2b";

/// The Dify `user` this browser maps to, learnt from a harmless call.
async fn dify_user(app: &TestApp, browser: &Browser) -> String {
    assert_eq!(browser.get("/conversations").await.status, 200);
    app.upstream_requests("/v1/conversations")
        .last()
        .and_then(Recorded::user)
        .expect("the list call carries a user")
}

/// Every upstream call carried a non-empty `user`, and every JSON call (POST, DELETE) was sent as
/// `Content-Type: application/json`.
fn assert_every_call_carries_a_user_and_json(app: &TestApp) {
    for r in app.emulator.requests() {
        let what = format!("{} {}", r.method, r.path);
        assert!(
            r.user().is_some_and(|u| !u.is_empty()),
            "{what} carries no user: query {:?}, body {:?}",
            r.query,
            String::from_utf8_lossy(&r.body)
        );
        if matches!(r.method.as_str(), "POST" | "DELETE") {
            assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
            assert!(r.json().is_some_and(|b| b.is_object()), "{what}: JSON body");
        }
    }
}

/// A new conversation with one answered message: `(conversation_id, message_id)`.
async fn conversation(browser: &Browser) -> (String, String) {
    let answer = browser.chat_blocking("Plan a trip to Lisbon", "").await;
    (
        answer["conversation_id"].as_str().unwrap().to_owned(),
        answer["message_id"].as_str().unwrap().to_owned(),
    )
}

/// Reads a stream until its first whole event and returns that event's JSON.
async fn first_event(response: &mut reqwest::Response) -> Value {
    let mut got = Vec::new();
    loop {
        if let Some(event) = sse_events(&got).into_iter().next() {
            return event;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the first event arrives")
            .expect("stream readable")
            .expect("the stream does not end before its first event");
        got.extend_from_slice(&chunk);
    }
}

/// A slow emulated answer (one piece a second for 30 s), open after its first event.
async fn slow_stream(browser: &Browser) -> (reqwest::Response, String) {
    let mut response = browser
        .chat_stream(&json!({"query": "SLOW answer please"}))
        .await;
    assert_eq!(response.status(), 200);
    let event = first_event(&mut response).await;
    let task_id = event["task_id"].as_str().expect("task_id").to_owned();
    (response, task_id)
}

fn stop_path(task_id: &str) -> String {
    format!("/v1/chat-messages/{task_id}/stop")
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within 2 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn messages(browser: &Browser, conversation_id: &str) -> Value {
    let res = browser
        .get(&format!("/messages?conversation_id={conversation_id}"))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

async fn post_raw(
    browser: &Browser,
    path: &str,
    content_type: &str,
    body: &str,
) -> crate::support::TestResponse {
    browser
        .send(
            browser
                .request(Method::POST, path)
                .header("content-type", content_type)
                .body(body.to_owned()),
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// Stop

#[tokio::test]
async fn a_client_leaving_mid_stream_stops_its_task_for_the_same_user() {
    let app = TestApp::spawn().await;
    let (response, task_id) = slow_stream(&app.browser).await;
    let chat_user = app.upstream_requests("/v1/chat-messages")[0]
        .user()
        .unwrap();
    drop(response);

    let path = stop_path(&task_id);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path == path, SOON)
        .await
        .expect("Dify's stop is called within 2 s of the client leaving");
    assert_eq!(stop.method, "POST");
    assert_eq!(stop.user().as_deref(), Some(chat_user.as_str()));
    assert_eq!(stop.header("content-type"), Some("application/json"));
    assert_eq!(stop.json(), Some(json!({"user": chat_user})));
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_ends_the_upstream_stream_at_difys_stop() {
    let app = TestApp::spawn().await;
    let (response, _task_id) = slow_stream(&app.browser).await;
    assert_eq!(app.emulator.open_streams(), 1);
    drop(response);

    // The 30 s answer ends at the stop, and what Dify sends until then (its usage) is read.
    wait_until("the upstream stream has ended", || {
        app.emulator.open_streams() == 0
    })
    .await;
    assert_eq!(
        app.emulator.dropped_streams(),
        Vec::<String>::new(),
        "the stopped answer was read to its end"
    );
}

#[tokio::test]
async fn a_client_leaving_while_dify_is_silent_is_noticed_without_waiting_for_dify() {
    let app = TestApp::spawn().await;
    // Dify's first event (capture 02), then nothing: only the client's leaving can end this.
    let capture = Reply::from_capture(&fixture("02-chat-streaming-new-conversation.http")).unwrap();
    let first = capture
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Send(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();
    let reply = Reply {
        steps: vec![Step::Send(first), Step::Hang],
        ..capture
    };
    app.emulator.script("POST", "/chat-messages", reply);
    let mut response = app
        .browser
        .chat_stream(&json!({"query": "think hard"}))
        .await;
    let task_id = first_event(&mut response).await["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(response);

    let path = stop_path(&task_id);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path == path, SOON)
        .await
        .expect("a stop within 2 s although Dify sends nothing more");
    assert!(stop.user().is_some_and(|u| !u.is_empty()));
    // A Dify that does not end the answer at its stop is given 3 s, then its connection closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_until("the silent upstream stream is closed", || {
        app.emulator.open_streams() == 0
    })
    .await;
    assert_eq!(app.emulator.dropped_streams(), vec![String::new()]);
}

#[tokio::test]
async fn a_stream_that_ends_normally_calls_no_stop() {
    let app = TestApp::spawn().await;
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let body = read_stream(response).await;
    let events = sse_events(&body);
    assert_eq!(events.last().unwrap()["event"], "message_end");
    let task_id = events[0]["task_id"].as_str().unwrap().to_owned();

    let path = stop_path(&task_id);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), QUIET)
        .await;
    assert_eq!(stop, None, "no stop call for a complete stream ({path})");
    assert!(app.emulator.dropped_streams().is_empty());
}

#[tokio::test]
async fn a_stream_that_ends_with_difys_error_event_calls_no_stop() {
    let app = TestApp::spawn().await;
    let reply =
        Reply::from_capture(&fixture("57-upstream-error-midstream-streaming.http")).unwrap();
    app.emulator.script("POST", "/chat-messages", reply);
    let response = app.browser.chat_stream(&json!({"query": "MIDFAIL"})).await;
    let body = read_stream(response).await;
    assert_eq!(
        body,
        fixture_body("57-upstream-error-midstream-streaming.http")
    );

    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), QUIET)
        .await;
    assert_eq!(stop, None, "an error event is a terminal event");
}

#[tokio::test]
async fn explicit_stop_carries_our_user_in_a_json_body_and_ends_the_stream() {
    let app = TestApp::spawn().await;
    let (mut response, task_id) = slow_stream(&app.browser).await;
    let chat_user = app.upstream_requests("/v1/chat-messages")[0]
        .user()
        .unwrap();

    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, &format!("/chat/{task_id}/stop")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json(), json!({"result": "success"}));

    let stops = app.upstream_requests(&stop_path(&task_id));
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].header("content-type"), Some("application/json"));
    assert_eq!(stops[0].json(), Some(json!({"user": chat_user})));

    // Dify ends a stopped stream with a plain message_end, which the browser gets.
    let mut rest = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("the stopped stream ends")
        .unwrap()
    {
        rest.extend_from_slice(&chunk);
    }
    let events = sse_events(&rest);
    assert_eq!(events.last().unwrap()["event"], "message_end");
    assert_eq!(
        app.upstream_requests(&stop_path(&task_id)).len(),
        1,
        "a stream that ended no stop-on-disconnect follows"
    );
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn a_user_in_the_stop_body_is_ignored() {
    let app = TestApp::spawn().await;
    let ours = dify_user(&app, &app.browser).await;
    let res = app
        .browser
        .post_json(
            &format!("/chat/{UNKNOWN_ID}/stop"),
            &json!({"user": "someone-else"}),
        )
        .await;
    // Dify answers success whatever the task (capture 52).
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"result": "success"}));
    let stop = &app.upstream_requests(&stop_path(UNKNOWN_ID))[0];
    assert_eq!(stop.json(), Some(json!({"user": ours})));
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn another_identity_stopping_a_task_sends_its_own_user_not_the_owners() {
    let app = TestApp::spawn().await;
    let bob = app.new_browser();
    let (_response, task_id) = slow_stream(&app.browser).await;
    let alice = app.upstream_requests("/v1/chat-messages")[0]
        .user()
        .unwrap();
    let bobs_user = dify_user(&app, &bob).await;
    assert_ne!(alice, bobs_user);

    let res = bob
        .send(bob.request(Method::POST, &format!("/chat/{task_id}/stop")))
        .await;
    assert_eq!(res.status, 200);
    let stop = &app.upstream_requests(&stop_path(&task_id))[0];
    assert_eq!(
        stop.user().as_deref(),
        Some(bobs_user.as_str()),
        "Dify decides by the user it gets; the proxy never lends the owner's"
    );
}

#[tokio::test]
async fn stop_with_a_bad_task_id_or_body_is_refused_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(65);
    for task_id in [long.as_str(), "a.b", "a%20b", "a_b", "a%2Fb"] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::POST, &format!("/chat/{task_id}/stop")),
            )
            .await;
        res.assert_error(400, "invalid_param");
    }
    let ok = "f02dec3c-358c-4b01-9451-860821071dba";
    post_raw(
        &app.browser,
        &format!("/chat/{ok}/stop"),
        "text/plain",
        "stop",
    )
    .await
    .assert_error(415, "unsupported_media_type");
    post_raw(
        &app.browser,
        &format!("/chat/{ok}/stop"),
        "application/json",
        "{",
    )
    .await
    .assert_error(400, "invalid_param");
    assert_eq!(app.upstream_count(), 0, "{:?}", app.emulator.requests());
}

// ---------------------------------------------------------------------------------------------
// Conversations: rename, auto-rename, delete

#[tokio::test]
async fn rename_is_relayed_with_our_user_in_a_json_body() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let ours = dify_user(&app, &app.browser).await;

    let res = app
        .browser
        .post_json(
            &format!("/conversations/{id}/name"),
            &json!({"name": "Lisbon 会话 ✨", "user": "someone-else", "extra": 1}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    let renamed = res.json();
    assert_eq!(renamed["id"], id.as_str());
    assert_eq!(renamed["name"], "Lisbon 会话 ✨");

    let sent = &app.upstream_requests(&format!("/v1/conversations/{id}/name"))[0];
    assert_eq!(
        sent.json(),
        Some(json!({"name": "Lisbon 会话 ✨", "auto_generate": false, "user": ours}))
    );
    let list = app.browser.get("/conversations").await.json();
    assert_eq!(list["data"][0]["name"], "Lisbon 会话 ✨");
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn auto_rename_is_relayed_with_auto_generate_and_our_user() {
    let app = TestApp::spawn().await;
    let answer = app
        .browser
        .chat(&json!({"query": "Plan a trip to Lisbon", "response_mode": "blocking", "auto_generate_name": false}))
        .await
        .json();
    let id = answer["conversation_id"].as_str().unwrap().to_owned();
    let ours = dify_user(&app, &app.browser).await;

    let res = app
        .browser
        .post_json(
            &format!("/conversations/{id}/name"),
            &json!({"auto_generate": true, "name": "ignored when generating"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let name = res.json()["name"].as_str().unwrap_or_default().to_owned();
    assert!(
        !name.is_empty() && name != "New conversation",
        "Dify named it: {name:?}"
    );

    let sent = &app.upstream_requests(&format!("/v1/conversations/{id}/name"))[0];
    assert_eq!(
        sent.json(),
        Some(json!({"auto_generate": true, "user": ours}))
    );
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn rename_without_a_valid_name_or_auto_generate_is_400_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    let path = format!("/conversations/{UNKNOWN_ID}/name");
    let too_long = "x".repeat(256);
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": null}),
        json!({"name": 5}),
        json!({"auto_generate": false}),
        json!({"auto_generate": "yes", "name": "x"}),
        json!({"name": too_long}),
        json!([]),
    ] {
        let res = app.browser.post_json(&path, &body).await;
        res.assert_error(400, "invalid_param");
    }
    app.browser
        .post_json("/conversations/not-a-uuid/name", &json!({"name": "x"}))
        .await
        .assert_error(400, "invalid_param");
    post_raw(&app.browser, &path, "text/plain", "{\"name\": \"x\"}")
        .await
        .assert_error(415, "unsupported_media_type");
    assert_eq!(app.upstream_count(), 0, "{:?}", app.emulator.requests());
}

#[tokio::test]
async fn a_name_of_255_characters_is_accepted() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let name = "é".repeat(255);
    let res = app
        .browser
        .post_json(&format!("/conversations/{id}/name"), &json!({"name": name}))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["name"], name.as_str());
}

#[tokio::test]
async fn delete_is_relayed_with_our_user_in_a_json_body() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let ours = dify_user(&app, &app.browser).await;

    let res = app.browser.delete(&format!("/conversations/{id}")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"result": "success"}));
    let sent = &app.upstream_requests(&format!("/v1/conversations/{id}"))[0];
    assert_eq!(sent.method, "DELETE");
    assert_eq!(sent.json(), Some(json!({"user": ours})));

    let list = app.browser.get("/conversations").await.json();
    assert_eq!(list["data"], json!([]));
    app.browser
        .get(&format!("/messages?conversation_id={id}"))
        .await
        .assert_error(404, "not_found");
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn delete_without_a_body_still_sends_dify_json_with_our_user() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let ours = dify_user(&app, &app.browser).await;

    // No body and no Content-Type: Dify itself would answer 415 to that (capture 61).
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::DELETE, &format!("/conversations/{id}")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sent = &app.upstream_requests(&format!("/v1/conversations/{id}"))[0];
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.json(), Some(json!({"user": ours})));
}

#[tokio::test]
async fn a_204_delete_from_newer_dify_is_relayed_as_204() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "DELETE",
        &format!("/conversations/{UNKNOWN_ID}"),
        Reply {
            status: 204,
            headers: vec![("Content-Type".into(), "application/json".into())],
            steps: vec![],
        },
    );
    let res = app
        .browser
        .delete(&format!("/conversations/{UNKNOWN_ID}"))
        .await;
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    assert_eq!(
        res.header("content-type"),
        None,
        "an empty answer declares no body type"
    );
}

#[tokio::test]
async fn deleting_twice_relays_difys_404() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    assert_eq!(
        app.browser
            .delete(&format!("/conversations/{id}"))
            .await
            .status,
        200
    );
    let res = app.browser.delete(&format!("/conversations/{id}")).await;
    res.assert_error(404, "not_found");
    assert_eq!(res.json()["message"], "Conversation Not Exists.");
}

#[tokio::test]
async fn delete_with_a_bad_id_or_body_is_refused_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    for id in ["abc", "aa0483dbe11440abb70fc2128bd443fa", "a%2Fb"] {
        app.browser
            .delete(&format!("/conversations/{id}"))
            .await
            .assert_error(400, "invalid_param");
    }
    let path = format!("/conversations/{UNKNOWN_ID}");
    let send = |ct: &'static str, body: &'static str| {
        app.browser.send(
            app.browser
                .request(Method::DELETE, &path)
                .header("content-type", ct)
                .body(body),
        )
    };
    send("text/plain", "x")
        .await
        .assert_error(415, "unsupported_media_type");
    send("application/json", "{")
        .await
        .assert_error(400, "invalid_param");
    send("application/json", "[]")
        .await
        .assert_error(400, "invalid_param");
    assert_eq!(app.upstream_count(), 0, "{:?}", app.emulator.requests());
}

// ---------------------------------------------------------------------------------------------
// Feedback and suggestions

#[tokio::test]
async fn feedback_like_dislike_and_revoke_are_relayed_with_our_user() {
    let app = TestApp::spawn().await;
    let (conversation_id, message_id) = conversation(&app.browser).await;
    let ours = dify_user(&app, &app.browser).await;
    let path = format!("/messages/{message_id}/feedbacks");
    let upstream = format!("/v1{path}");

    let steps = [
        (
            json!({"rating": "like", "content": "good 👍", "user": "someone-else"}),
            json!({"rating": "like", "user": ours, "content": "good 👍"}),
            json!({"rating": "like"}),
        ),
        (
            json!({"rating": "dislike"}),
            json!({"rating": "dislike", "user": ours}),
            json!({"rating": "dislike"}),
        ),
        (
            json!({"rating": null}),
            json!({"rating": null, "user": ours}),
            Value::Null,
        ),
    ];
    for (n, (body, sent, stored)) in steps.into_iter().enumerate() {
        let res = app.browser.post_json(&path, &body).await;
        assert_eq!(res.status, 200, "{body}: {}", res.text());
        assert_eq!(res.json(), json!({"result": "success"}));
        assert_eq!(app.upstream_requests(&upstream)[n].json(), Some(sent));
        let listed = messages(&app.browser, &conversation_id).await;
        assert_eq!(listed["data"][0]["feedback"], stored, "after {body}");
    }
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn feedback_with_bad_input_is_400_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    let path = format!("/messages/{UNKNOWN_ID}/feedbacks");
    let too_long = "x".repeat(10_001);
    for body in [
        json!({}),
        json!({"rating": "love"}),
        json!({"rating": "LIKE"}),
        json!({"rating": 1}),
        json!({"rating": true}),
        json!({"rating": "like", "content": 5}),
        json!({"rating": "like", "content": too_long}),
        json!("like"),
    ] {
        app.browser
            .post_json(&path, &body)
            .await
            .assert_error(400, "invalid_param");
    }
    app.browser
        .post_json("/messages/not-a-uuid/feedbacks", &json!({"rating": "like"}))
        .await
        .assert_error(400, "invalid_param");
    post_raw(&app.browser, &path, "text/plain", "{\"rating\": \"like\"}")
        .await
        .assert_error(415, "unsupported_media_type");
    post_raw(&app.browser, &path, "application/json", "{\"rating\":")
        .await
        .assert_error(400, "invalid_param");
    assert_eq!(app.upstream_count(), 0, "{:?}", app.emulator.requests());
}

#[tokio::test]
async fn suggested_questions_are_relayed_with_our_user() {
    let app = TestApp::spawn_with(
        vec![],
        EmulatorOptions {
            suggested_questions_after_answer: true,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let (_, message_id) = conversation(&app.browser).await;
    let ours = dify_user(&app, &app.browser).await;

    let res = app
        .browser
        .get(&format!(
            "/messages/{message_id}/suggested?user=someone-else"
        ))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let body = res.json();
    assert_eq!(body["result"], "success");
    assert!(body["data"].as_array().is_some_and(|d| !d.is_empty()));

    let sent = &app.upstream_requests(&format!("/v1/messages/{message_id}/suggested"))[0];
    assert_eq!(sent.query_param("user").as_deref(), Some(ours.as_str()));
    assert_eq!(
        sent.query
            .as_deref()
            .unwrap_or_default()
            .matches("user=")
            .count(),
        1
    );
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn suggested_questions_switched_off_relay_difys_400() {
    let app = TestApp::spawn().await;
    let (_, message_id) = conversation(&app.browser).await;
    let res = app
        .browser
        .get(&format!("/messages/{message_id}/suggested"))
        .await;
    res.assert_error(400, "bad_request");
    assert_eq!(res.json()["message"], "Suggested Questions Is Disabled.");
}

#[tokio::test]
async fn suggested_with_a_bad_message_id_is_400_without_an_upstream_call() {
    let app = TestApp::spawn().await;
    for id in ["abc", "a%2Fb", "aa0483dbe11440abb70fc2128bd443fa"] {
        app.browser
            .get(&format!("/messages/{id}/suggested"))
            .await
            .assert_error(400, "invalid_param");
    }
    assert_eq!(app.upstream_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// App settings

#[tokio::test]
async fn parameters_info_and_meta_are_relayed_unchanged_with_our_user() {
    let app = TestApp::spawn().await;
    let ours = dify_user(&app, &app.browser).await;
    for (route, capture) in [
        ("/parameters", "32-parameters.http"),
        ("/info", "34-info.http"),
        ("/meta", "33-meta.http"),
    ] {
        let res = app.browser.get(&format!("{route}?user=someone-else")).await;
        assert_eq!(res.status, 200, "{route}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.body.to_vec(), fixture_body(capture), "{route}");
        let sent = app.upstream_requests(&format!("/v1{route}"));
        assert_eq!(sent.len(), 1, "{route}");
        assert_eq!(sent[0].query_param("user").as_deref(), Some(ours.as_str()));
    }
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn app_settings_are_cached_for_a_short_while() {
    let app = TestApp::spawn().await;
    let first = app.browser.get("/parameters").await;
    let second = app.new_browser().get("/parameters").await;
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body);
    assert_eq!(app.upstream_requests("/v1/parameters").len(), 1);
}

#[tokio::test]
async fn an_app_settings_error_is_relayed_in_our_shape_and_not_cached() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "GET",
        "/parameters",
        Reply::json(
            400,
            &json!({"code": "app_unavailable", "message": "App unavailable, please check your app configurations.", "status": 400}),
        ),
    );
    app.browser
        .get("/parameters")
        .await
        .assert_error(400, "app_unavailable");
    assert_eq!(app.browser.get("/parameters").await.status, 200);
    assert_eq!(app.upstream_requests("/v1/parameters").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Another identity

#[tokio::test]
async fn another_identity_cannot_rename_a_conversation() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let bob = app.new_browser();
    let res = bob
        .post_json(
            &format!("/conversations/{id}/name"),
            &json!({"name": "mine now"}),
        )
        .await;
    res.assert_error(404, "not_found");
    let list = app.browser.get("/conversations").await.json();
    assert_ne!(list["data"][0]["name"], "mine now");
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn another_identity_cannot_delete_a_conversation() {
    let app = TestApp::spawn().await;
    let (id, _) = conversation(&app.browser).await;
    let bob = app.new_browser();
    bob.delete(&format!("/conversations/{id}"))
        .await
        .assert_error(404, "not_found");
    let list = app.browser.get("/conversations").await.json();
    assert_eq!(
        list["data"][0]["id"],
        id.as_str(),
        "still there for its owner"
    );
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn another_identity_cannot_rate_a_message() {
    let app = TestApp::spawn().await;
    let (conversation_id, message_id) = conversation(&app.browser).await;
    let bob = app.new_browser();
    let res = bob
        .post_json(
            &format!("/messages/{message_id}/feedbacks"),
            &json!({"rating": "dislike"}),
        )
        .await;
    res.assert_error(404, "not_found");
    assert_eq!(res.json()["message"], "Message Not Exists.");
    let listed = messages(&app.browser, &conversation_id).await;
    assert_eq!(listed["data"][0]["feedback"], Value::Null);
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn another_identity_cannot_read_messages_or_their_suggestions() {
    let app = TestApp::spawn_with(
        vec![],
        EmulatorOptions {
            suggested_questions_after_answer: true,
            ..EmulatorOptions::default()
        },
    )
    .await;
    let (conversation_id, message_id) = conversation(&app.browser).await;
    let bob = app.new_browser();
    bob.get(&format!("/messages?conversation_id={conversation_id}"))
        .await
        .assert_error(404, "not_found");
    bob.get(&format!("/messages/{message_id}/suggested"))
        .await
        .assert_error(404, "not_found");
    let bobs = bob.get("/conversations").await.json();
    assert_eq!(bobs["data"], json!([]));
    assert_every_call_carries_a_user_and_json(&app);
}

#[tokio::test]
async fn difys_404_for_an_unknown_conversation_is_relayed_as_it_came() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        &format!("/conversations/{UNKNOWN_ID}/name"),
        Reply::from_capture(&fixture("26-conversation-rename-nonexistent.http")).unwrap(),
    );
    let res = app
        .browser
        .post_json(
            &format!("/conversations/{UNKNOWN_ID}/name"),
            &json!({"name": "x"}),
        )
        .await;
    res.assert_error(404, "not_found");
    assert_eq!(res.json()["message"], "Conversation Not Exists.");
}
