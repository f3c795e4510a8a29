//! Malformed requests: bad JSON bodies and content types, ids that are not UUIDs, CR/LF where
//! they do not belong, and path traversal. Each is our JSON error (or a 404/405 for paths) and
//! never reaches Dify.

use crate::support::raw::{Raw, raw, raw_bytes};
use crate::support::{TestApp, TestResponse, assert_nothing_reached_dify, vars};
use reqwest::Method;
use serde_json::json;

const USER_HEADER: &str = "X-Forwarded-User";
const CONVERSATION: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";
const MESSAGE: &str = "f3e2cd8a-f1d4-4370-b648-12d5e59a88e3";

// ---------------------------------------------------------------------------------------------
// Query values

#[tokio::test]
async fn a_long_but_invalid_query_value_is_400() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(4 * 1024);
    for path in [
        format!("/conversations?last_id={long}"),
        format!("/conversations?sort_by={long}"),
        format!("/conversations?limit={long}"),
        format!("/messages?conversation_id={long}"),
    ] {
        app.browser
            .get(&path)
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Bodies

async fn post_raw_json(app: &TestApp, path: &str, body: &'static [u8]) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

fn json_routes() -> Vec<String> {
    vec![
        "/chat".into(),
        format!("/conversations/{CONVERSATION}/name"),
        format!("/messages/{MESSAGE}/feedbacks"),
    ]
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        for body in [
            &b"{\"query\": "[..],
            b"{'query': 'hi'}",
            b"",
            b"{\"query\": \"hi\"} trailing",
        ] {
            post_raw_json(&app, &path, body)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn invalid_utf8_in_a_json_body_is_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        post_raw_json(
            &app,
            &path,
            b"{\"query\": \"\xff\xfe\", \"name\": \"\xc3\"}",
        )
        .await
        .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn json_bodies_that_are_not_objects_are_400() {
    let app = TestApp::spawn().await;
    for path in json_routes() {
        for body in [
            &b"[]"[..],
            b"\"x\"",
            b"null",
            b"5",
            b"[{\"query\": \"hi\"}]",
        ] {
            post_raw_json(&app, &path, body)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn wrong_content_types_on_json_routes_are_415() {
    let app = TestApp::spawn().await;
    let mut routes = json_routes();
    routes.push("/chat/f02dec3c-358c-4b01-9451-860821071dba/stop".into());
    for path in routes {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "application/jsonp",
            "text/json",
        ] {
            let res = app
                .browser
                .send(
                    app.browser
                        .request(Method::POST, &path)
                        .header("content-type", content_type)
                        .body(r#"{"query": "hi", "name": "x", "rating": "like"}"#),
                )
                .await;
            res.assert_error(415, "unsupported_media_type");
        }
    }
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::DELETE, &format!("/conversations/{CONVERSATION}"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    res.assert_error(415, "unsupported_media_type");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn a_json_body_without_a_content_type_is_415() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .body(r#"{"query": "hi"}"#),
        )
        .await;
    res.assert_error(415, "unsupported_media_type");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn an_upload_that_is_not_multipart_is_415() {
    let app = TestApp::spawn().await;
    for content_type in ["application/json", "text/plain", "application/octet-stream"] {
        let res = app
            .browser
            .send(
                app.browser
                    .request(Method::POST, "/files/upload")
                    .header("content-type", content_type)
                    .body("{}"),
            )
            .await;
        res.assert_error(415, "unsupported_media_type");
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Ids and query parameters

const BAD_IDS: &[&str] = &[
    "not-a-uuid",
    "aa0483dbe11440abb70fc2128bd443fa",
    "%7Baa0483db-e114-40ab-b70f-c2128bd443fa%7D",
    "aa0483db-e114-40ab-b70f-c2128bd443fa%0D%0AX-Injected:%201",
    "aa0483db-e114-40ab-b70f-c2128bd443f%0A",
    "%2E%2E%2F%2E%2E%2Fv1%2Finfo",
    "..%2F..%2Fv1%2Finfo",
    "aa0483db-e114-40ab-b70f-c2128bd443fa%00",
    "%20aa0483db-e114-40ab-b70f-c2128bd443fa",
];

#[tokio::test]
async fn non_uuid_ids_in_paths_are_400() {
    let app = TestApp::spawn().await;
    for id in BAD_IDS {
        let b = &app.browser;
        let requests = [
            b.request(Method::DELETE, &format!("/conversations/{id}"))
                .json(&json!({})),
            b.request(Method::POST, &format!("/conversations/{id}/name"))
                .json(&json!({"name": "x"})),
            b.request(Method::POST, &format!("/messages/{id}/feedbacks"))
                .json(&json!({"rating": "like"})),
            b.request(Method::GET, &format!("/messages/{id}/suggested")),
        ];
        for request in requests {
            b.send(request).await.assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn non_uuid_ids_in_query_parameters_are_400() {
    let app = TestApp::spawn().await;
    for id in BAD_IDS {
        for path in [
            format!("/conversations?last_id={id}"),
            format!("/messages?conversation_id={id}"),
            format!("/messages?conversation_id={CONVERSATION}&first_id={id}"),
        ] {
            app.browser
                .get(&path)
                .await
                .assert_error(400, "invalid_param");
        }
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn non_uuid_ids_in_chat_bodies_are_400() {
    let app = TestApp::spawn().await;
    for id in [
        "not-a-uuid",
        "aa0483db-e114-40ab-b70f-c2128bd443fa\r\nX-Injected: 1",
        "../../v1/info",
        "aa0483dbe11440abb70fc2128bd443fa",
    ] {
        app.browser
            .chat(&json!({"query": "hi", "conversation_id": id}))
            .await
            .assert_error(400, "invalid_param");
        let file = json!({"type": "image", "transfer_method": "local_file", "upload_file_id": id});
        app.browser
            .chat(&json!({"query": "hi", "files": [file]}))
            .await
            .assert_error(400, "invalid_param");
    }
    app.browser
        .chat(&json!({"query": "hi", "conversation_id": 5}))
        .await
        .assert_error(400, "invalid_param");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn bad_task_ids_are_400() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(65);
    for task in [
        "a_b",
        "abc%0D%0AX-Injected:%201",
        "%2E%2E%2Finfo",
        "t%20id",
        too_long.as_str(),
    ] {
        app.browser
            .post_json(&format!("/chat/{task}/stop"), &json!({}))
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn crlf_in_query_parameters_is_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/conversations?sort_by=created_at%0D%0AX-Injected:%201".to_owned(),
        "/conversations?limit=20%0D%0A".to_owned(),
        "/conversations?limit=%0A20".to_owned(),
        format!("/conversations?last_id={CONVERSATION}%0D%0A"),
        format!("/messages?conversation_id={CONVERSATION}%0D%0AX-Injected:%201"),
        format!("/messages?conversation_id={CONVERSATION}&limit=1%0D%0A"),
    ] {
        app.browser
            .get(&path)
            .await
            .assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn raw_cr_or_lf_in_the_request_line_or_a_header_is_refused() {
    let app = TestApp::spawn_with_env(vars(&[
        ("USER_HEADER", USER_HEADER),
        ("TRUSTED_PROXIES", "127.0.0.1/32,::1/128"),
    ]))
    .await;
    for request in [
        format!(
            "GET /conversations?limit=1\rX-Injected: 1 HTTP/1.1\r\nHost: {}\r\n{USER_HEADER}: a\r\n\r\n",
            app.addr
        ),
        format!(
            "GET /conversations HTTP/1.1\r\nHost: {}\r\n{USER_HEADER}: alice\rX-Injected: 1\r\n\r\n",
            app.addr
        ),
    ] {
        let res = raw_bytes(&app, request.as_bytes()).await;
        assert_eq!(res.status, 400, "{}", res.head);
    }
    assert_nothing_reached_dify(&app);
}

// ---------------------------------------------------------------------------------------------
// Path traversal

const TRAVERSALS: &[&str] = &[
    "/../Cargo.toml",
    "/%2e%2e/Cargo.toml",
    "/%2E%2E/Cargo.toml",
    "/..%2fCargo.toml",
    "/%2e%2e%2fCargo.toml",
    "/js/../../src/main.rs",
    "/js/..%2f..%2fsrc%2fmain.rs",
    "/./../Cargo.toml",
    "/..%5cCargo.toml",
    "//../Cargo.toml",
    "/static/../../Cargo.toml",
];

fn assert_not_leaked(res: &Raw, target: &str) {
    let body = String::from_utf8_lossy(&res.body);
    assert!(
        !body.contains("[package]") && !body.contains("fn main"),
        "{target} leaked a file"
    );
}

async fn assert_traversals_refused(app: &TestApp) {
    for target in TRAVERSALS {
        let res = raw(app, "GET", target, "").await;
        assert_not_leaked(&res, target);
        res.assert_error(404, "not_found");
    }
    assert_nothing_reached_dify(app);
}

#[tokio::test]
async fn path_traversal_on_the_embedded_page_is_404() {
    let app = TestApp::spawn().await;
    assert_traversals_refused(&app).await;
}

async fn assert_writes_to_page_paths_are_405(app: &TestApp) {
    for (method, path) in [
        (Method::POST, "/"),
        (Method::DELETE, "/"),
        (Method::PUT, "/index.html"),
    ] {
        let res = app.browser.send(app.browser.request(method, path)).await;
        res.assert_error(405, "method_not_allowed");
        assert_eq!(res.header("allow"), Some("GET,HEAD"), "{path}");
    }
    let res = app
        .browser
        .send(app.browser.request(Method::POST, "/no-such-page.html"))
        .await;
    res.assert_error(404, "not_found");
}

#[tokio::test]
async fn another_method_on_an_embedded_page_path_is_405_with_allow() {
    let app = TestApp::spawn().await;
    assert_writes_to_page_paths_are_405(&app).await;
}

#[tokio::test]
async fn another_method_on_a_static_dir_page_path_is_405_with_allow() {
    let dir = format!("{}/static", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with_env(vec![("STATIC_DIR", dir)]).await;
    assert_writes_to_page_paths_are_405(&app).await;
}

#[tokio::test]
async fn path_traversal_on_a_static_dir_is_404() {
    let dir = format!("{}/static", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with_env(vec![("STATIC_DIR", dir)]).await;
    assert_traversals_refused(&app).await;
}

#[tokio::test]
async fn path_traversal_on_the_file_passthrough_is_404() {
    let app = TestApp::spawn().await;
    for target in [
        "/files/../v1/info".to_owned(),
        "/files/..%2fv1%2finfo/file-preview".to_owned(),
        "/files/%2e%2e/file-preview?timestamp=1&nonce=a&sign=b".to_owned(),
        format!("/files/{CONVERSATION}/..%2f..%2fv1%2finfo"),
        format!("/files/{CONVERSATION}/file-preview/../../../v1/info"),
        format!("/files/{CONVERSATION}%2f..%2f..%2fv1%2finfo/file-preview"),
        "/files/tools/..%2f..%2fv1%2finfo.png".to_owned(),
        "/files/tools/../../v1/info".to_owned(),
        format!("/files/tools/{CONVERSATION}.png%2f..%2f..%2finfo"),
        format!("/files/tools/{CONVERSATION}.p%2e%2e"),
    ] {
        let res = raw(&app, "GET", &target, "").await;
        assert_not_leaked(&res, &target);
        res.assert_error(404, "not_found");
    }
    assert_nothing_reached_dify(&app);
}
