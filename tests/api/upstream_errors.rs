//! Dify's errors, in each of its shapes, and transport failures become our one JSON error.


use crate::support::{TestApp, fixture};
use dify_emulator::Reply;
use serde_json::json;

const CHAT: &str = "/chat-messages";

async fn blocking(app: &TestApp) -> crate::support::TestResponse {
    app.browser
        .chat(&json!({"query": "hi", "response_mode": "blocking"}))
        .await
}

async fn streaming(app: &TestApp) -> crate::support::TestResponse {
    app.browser.chat(&json!({"query": "hi"})).await
}

#[tokio::test]
async fn difys_full_envelope_keeps_status_code_and_message() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::from_capture(&fixture("45-error-nonexistent-conversation_id.http")).unwrap(),
    );
    let res = blocking(&app).await;
    res.assert_error(404, "not_found");
    assert_eq!(res.json()["message"], "Conversation Not Exists.");
}

#[tokio::test]
async fn reqparse_shape_without_status_gets_the_http_status() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::from_capture(&fixture("42-error-missing-query.http")).unwrap(),
    );
    blocking(&app).await.assert_error(400, "invalid_param");
}

#[tokio::test]
async fn restx_shape_without_code_becomes_invalid_param() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::json(
            400,
            &json!({"errors": {"query": "The chat query Missing required parameter in the JSON body"}, "message": "Input payload validation failed"}),
        ),
    );
    streaming(&app).await.assert_error(400, "invalid_param");
}

#[tokio::test]
async fn a_500_without_status_keeps_difys_code() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::raw_json(
            500,
            "{\"message\": \"Internal Server Error\", \"code\": \"unknown\"}\n",
        ),
    );
    blocking(&app).await.assert_error(500, "unknown");
}

#[tokio::test]
async fn a_5xx_without_code_becomes_upstream_error() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("POST", CHAT, Reply::json(503, &json!({"message": "busy"})));
    streaming(&app).await.assert_error(503, "upstream_error");
}

#[tokio::test]
async fn blocking_model_failure_is_relayed_as_difys_400() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::from_capture(&fixture("56-upstream-500-blocking.http")).unwrap(),
    );
    blocking(&app)
        .await
        .assert_error(400, "completion_request_error");
}

#[tokio::test]
async fn an_html_error_page_becomes_502_upstream_unavailable() {
    let app = TestApp::spawn().await;
    for status in [502, 500, 404] {
        app.emulator.script(
            "POST",
            CHAT,
            Reply::html(
                status,
                "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>",
            ),
        );
        streaming(&app)
            .await
            .assert_error(502, "upstream_unavailable");
    }
}

#[tokio::test]
async fn dify_refusing_our_key_is_a_502_not_a_401() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        CHAT,
        Reply::from_capture(&fixture("40-error-bad-api-key.http")).unwrap(),
    );
    let res = blocking(&app).await;
    res.assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn a_refused_connection_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = TestApp::spawn_with_env(vec![(
        "DIFY_BASE_URL",
        format!("http://127.0.0.1:{port}/v1"),
    )])
    .await;
    streaming(&app)
        .await
        .assert_error(502, "upstream_unavailable");
    blocking(&app)
        .await
        .assert_error(502, "upstream_unavailable");
    app.browser
        .get("/conversations")
        .await
        .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_after_the_upstream_timeout() {
    let app = TestApp::spawn_with_env(vec![("UPSTREAM_TIMEOUT_SECS", "1".into())]).await;
    app.emulator
        .script("POST", CHAT, Reply::hang_before_headers());
    streaming(&app).await.assert_error(504, "upstream_timeout");
    app.emulator
        .script("POST", CHAT, Reply::hang_before_headers());
    blocking(&app).await.assert_error(504, "upstream_timeout");
    app.emulator
        .script("GET", "/conversations", Reply::hang_before_headers());
    app.browser
        .get("/conversations")
        .await
        .assert_error(504, "upstream_timeout");
}

#[tokio::test]
async fn the_emulators_own_validation_errors_come_back_in_our_shape() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .chat(&json!({"query": "hi", "conversation_id": "1c6ae8c6-0ba8-4b54-bd48-1d2d5e7b7ed2", "response_mode": "blocking"}))
        .await;
    res.assert_error(404, "not_found");
}
