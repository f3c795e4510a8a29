//! Dify's errors, in each of its shapes, and transport failures become our one JSON error.

use std::time::{Duration, Instant};

use crate::support::{TestApp, fixture, read_stream};
use dify_emulator::{EmulatorOptions, Reply, Step};
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
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.upstream_timeout = Duration::from_millis(200);
    })
    .await;
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
async fn an_answer_that_stalls_mid_body_is_cut_at_the_upstream_timeout() {
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.upstream_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stalled = Reply::raw_json(200, r#"{"limit": 20, "has_more": false, "data": []}"#);
    stalled.steps = vec![Step::Send("{\"limit\": 20, ".into()), Step::Hang];
    app.emulator.script("GET", "/conversations", stalled);
    let started = Instant::now();
    let response = app
        .browser
        .request(reqwest::Method::GET, "/conversations")
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the body ends in an error, not as if whole: {body:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
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
    let timeout = Duration::from_millis(300);
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.upstream_timeout = timeout;
    })
    .await;
    assert_eq!(
        app.browser.get("/conversations").await.status,
        200,
        "warm-up"
    );
    app.emulator.clear_requests();
    for _ in 0..3 {
        let mut slow = dify_503();
        slow.steps.insert(0, Step::Pause(timeout * 6 / 10));
        app.emulator.script("GET", "/conversations", slow);
    }
    let started = Instant::now();
    let res = app.browser.get("/conversations").await;
    let took = started.elapsed();
    // Three answers 180 ms apart plus the backoffs would take over 700 ms.
    assert!(took < timeout + Duration::from_millis(250), "{took:?}");
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
        .chat(&crate::support::blocking("once"))
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

// ---------------------------------------------------------------------------------------------
// A 2xx that is an HTML page: a login page (SSO, Cloudflare Access) or a proxy's page in front
// of Dify, not Dify's answer

const LOGIN_PAGE: &str =
    "<!doctype html><html><head><title>Sign in</title></head><body><form>SSO</form></body></html>";

#[tokio::test]
async fn an_html_page_answered_200_to_a_read_is_502_upstream_unavailable() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("GET", "/conversations", Reply::html(200, LOGIN_PAGE));
    let res = app.browser.get("/conversations").await;
    res.assert_error(502, "upstream_unavailable");
    assert!(!res.text().contains("Sign in"), "the page is not relayed");
}

#[tokio::test]
async fn an_html_page_answered_200_to_a_blocking_chat_is_502_upstream_unavailable() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("POST", CHAT, Reply::html(200, LOGIN_PAGE));
    blocking(&app)
        .await
        .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn an_html_page_answered_200_to_a_streamed_chat_is_a_502_json_error_not_a_stream() {
    let app = TestApp::spawn().await;
    app.emulator
        .script("POST", CHAT, Reply::html(200, LOGIN_PAGE));
    streaming(&app)
        .await
        .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn an_html_200_is_recognised_whatever_the_case_and_parameters_of_its_type_and_logged() {
    let app = TestApp::spawn().await;
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    let content_type = format!("Text/HTML ; Charset=UTF-8; sso={marker}");
    app.emulator.script(
        "GET",
        "/parameters",
        Reply {
            status: 200,
            headers: vec![("Content-Type".to_owned(), content_type.clone())],
            steps: vec![Step::Send(LOGIN_PAGE.into())],
        },
    );
    app.browser
        .get("/parameters")
        .await
        .assert_error(502, "upstream_unavailable");
    let line = crate::support::logs::captured()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["content_type"]
                .as_str()
                .is_some_and(|t| t.contains(&marker))
        })
        .expect("a log line naming the content type");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["upstream_status"], 200, "{line}");
    assert_eq!(line["content_type"], content_type.as_str(), "{line}");
}

#[tokio::test]
async fn a_403_forbidden_outside_site_is_still_dify_refusing_our_key() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "GET",
        "/parameters",
        Reply::json(
            403,
            &json!({"code": "forbidden", "message": "The app's API service has been disabled.", "status": 403}),
        ),
    );
    app.browser
        .get("/parameters")
        .await
        .assert_error(502, "upstream_unavailable");
}

#[tokio::test]
async fn an_empty_2xx_typed_as_html_is_no_page_and_goes_through() {
    let app = TestApp::spawn().await;
    let id = "1c6ae8c6-0ba8-4b54-bd48-1d2d5e7b7ed2";
    // Flask types an answer that names no type as HTML, empty or not.
    app.emulator.script(
        "DELETE",
        &format!("/conversations/{id}"),
        Reply {
            status: 204,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/html; charset=utf-8".to_owned(),
            )],
            steps: vec![],
        },
    );
    let res = app.browser.delete(&format!("/conversations/{id}")).await;
    assert_eq!(res.status, 204, "{}", res.text());
}
