//! Cross-site requests: CORS is closed unless `ALLOWED_ORIGINS` lists the origin, and a
//! state-changing request from another site (CSRF) is 403 and never reaches Dify.

use crate::support::{
    TestApp, TestResponse, assert_nothing_reached_dify, blocking, own_origin, preflight, vars,
};
use reqwest::Method;
use serde_json::json;

const CONVERSATION: &str = "aa0483db-e114-40ab-b70f-c2128bd443fa";
const MESSAGE: &str = "f3e2cd8a-f1d4-4370-b648-12d5e59a88e3";
const EVIL: &str = "https://evil.example";
const FRIEND: &str = "https://app.example";

// ---------------------------------------------------------------------------------------------
// CORS

fn assert_no_allow_headers(res: &TestResponse) {
    let allow: Vec<&str> = res
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-allow"))
        .collect();
    assert!(allow.is_empty(), "unexpected CORS headers: {allow:?}");
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let app = TestApp::spawn().await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    assert_no_allow_headers(&res);
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("origin", FRIEND),
        )
        .await;
    assert_no_allow_headers(&res);
}

#[tokio::test]
async fn cors_preflight_from_an_allowed_origin_gets_origin_credentials_methods_and_headers() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app.browser.send(preflight(&app, FRIEND)).await;
    assert!(res.status.is_success(), "{}", res.status);
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    let methods = res
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    for method in ["GET", "POST", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("x-request-id"),
        "{headers}"
    );
    assert!(
        res.header("access-control-max-age")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|secs| secs > 0),
        "preflights are cached"
    );
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn cors_actual_request_from_an_allowed_origin_gets_origin_and_credentials() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert!(
        res.header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin"))
    );
}

#[tokio::test]
async fn cors_exposes_the_request_id_stream_id_and_retry_after_to_an_allowed_origin() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("origin", FRIEND),
        )
        .await;
    let exposed: Vec<String> = res
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for header in ["x-request-id", "x-stream-id", "retry-after"] {
        assert!(exposed.iter().any(|h| h == header), "{header}: {exposed:?}");
    }
}

#[tokio::test]
async fn cors_error_answers_to_an_allowed_origin_are_readable_by_it() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .json(&json!({"query": ""})),
        )
        .await;
    res.assert_error(400, "invalid_param");
    assert_eq!(res.header("access-control-allow-origin"), Some(FRIEND));
}

#[tokio::test]
async fn cors_another_origin_gets_no_allow_headers_even_with_a_list() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app.browser.send(preflight(&app, EVIL)).await;
    assert_no_allow_headers(&res);
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("origin", EVIL),
        )
        .await;
    assert_no_allow_headers(&res);
    // A look-alike of an allowed origin is another origin.
    for lookalike in [
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:8443",
    ] {
        assert_no_allow_headers(&app.browser.send(preflight(&app, lookalike)).await);
    }
}

// ---------------------------------------------------------------------------------------------
// CSRF

/// Every state-changing route, with a request that would reach Dify if it were not refused.
fn state_changing(app: &TestApp) -> Vec<reqwest::RequestBuilder> {
    let b = &app.browser;
    let upload = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec())
            .file_name("a.txt")
            .mime_str("text/plain")
            .expect("mime"),
    );
    vec![
        b.request(Method::POST, "/chat").json(&blocking("hi")),
        b.request(
            Method::POST,
            "/chat/f02dec3c-358c-4b01-9451-860821071dba/stop",
        )
        .json(&json!({})),
        b.request(Method::DELETE, &format!("/conversations/{CONVERSATION}"))
            .json(&json!({})),
        b.request(Method::POST, &format!("/conversations/{CONVERSATION}/name"))
            .json(&json!({"name": "x"})),
        b.request(Method::POST, &format!("/messages/{MESSAGE}/feedbacks"))
            .json(&json!({"rating": "like"})),
        b.request(Method::POST, "/files/upload").multipart(upload),
    ]
}

async fn assert_all_forbidden(
    app: &TestApp,
    add: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) {
    for request in state_changing(app) {
        let res = app.browser.send(add(request)).await;
        res.assert_error(403, "forbidden");
        assert!(
            res.header("set-cookie").is_none(),
            "refused before an identity is made"
        );
    }
    assert_nothing_reached_dify(app);
}

#[tokio::test]
async fn csrf_a_foreign_origin_is_403_on_every_state_changing_route() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("origin", EVIL)).await;
}

#[tokio::test]
async fn csrf_origin_null_is_403() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("origin", "null")).await;
}

#[tokio::test]
async fn csrf_sec_fetch_site_cross_site_without_origin_is_403() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| r.header("sec-fetch-site", "cross-site")).await;
}

#[tokio::test]
async fn csrf_a_foreign_origin_is_403_even_with_sec_fetch_site_same_origin() {
    let app = TestApp::spawn().await;
    assert_all_forbidden(&app, |r| {
        r.header("origin", EVIL)
            .header("sec-fetch-site", "same-origin")
    })
    .await;
}

#[tokio::test]
async fn csrf_the_proxys_own_origin_passes() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", own_origin(&app))
                .header("sec-fetch-site", "same-origin")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn csrf_an_allow_listed_origin_passes() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", FRIEND)
                .header("sec-fetch-site", "cross-site")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test]
async fn csrf_requests_with_neither_origin_nor_sec_fetch_site_pass() {
    let app = TestApp::spawn().await;
    let answer = app.browser.chat_blocking("from curl", "").await;
    let conversation = answer["conversation_id"].as_str().unwrap_or_default();
    let res = app
        .browser
        .delete(&format!("/conversations/{conversation}"))
        .await;
    assert!(res.status.is_success(), "{}", res.text());
}

#[tokio::test]
async fn csrf_same_site_fetch_without_origin_passes() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("sec-fetch-site", "same-site")
                .json(&blocking("hi")),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

async fn post_with_forwarded_https(app: &TestApp, origin: &str) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", origin)
                .header("x-forwarded-proto", "https")
                .json(&blocking("hi")),
        )
        .await
}

#[tokio::test]
async fn csrf_forwarded_https_makes_the_own_origin_https_when_any_peer_is_believed() {
    let app = TestApp::spawn().await;
    let https = format!("https://{}", app.addr);
    assert_eq!(post_with_forwarded_https(&app, &https).await.status, 200);
    post_with_forwarded_https(&app, &own_origin(&app))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn csrf_forwarded_https_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn_with_env(vars(&[("TRUSTED_PROXIES", "10.0.0.0/8")])).await;
    let https = format!("https://{}", app.addr);
    post_with_forwarded_https(&app, &https)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        post_with_forwarded_https(&app, &own_origin(&app))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn csrf_forwarded_https_from_a_trusted_peer_is_believed() {
    let app = TestApp::spawn_with_env(vars(&[("TRUSTED_PROXIES", "127.0.0.0/8")])).await;
    let https = format!("https://{}", app.addr);
    assert_eq!(post_with_forwarded_https(&app, &https).await.status, 200);
}

/// The front door answers these itself, around the router; they are still logged with the
/// route they were for, and the route's handler never runs.
#[tokio::test]
async fn answered_requests_are_logged_with_their_route() {
    let app = TestApp::spawn_with_env(vars(&[("ALLOWED_ORIGINS", FRIEND)])).await;
    let logged = |request_id: &str| {
        crate::support::logs::captured()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "request" && l["request_id"] == request_id)
            .map(|l| (l["route"].clone(), l["status"].clone()))
    };
    let id = format!("preflight-{}", uuid::Uuid::new_v4());
    let res = app
        .browser
        .send(preflight(&app, FRIEND).header("x-request-id", &id))
        .await;
    assert!(res.status.is_success(), "{}", res.status);
    assert_eq!(res.header("x-request-id"), Some(id.as_str()));
    assert_eq!(
        logged(&id),
        Some((json!("/chat"), json!(res.status.as_u16())))
    );

    let id = format!("refused-{}", uuid::Uuid::new_v4());
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::POST, "/chat")
                .header("origin", EVIL)
                .header("x-request-id", &id)
                .json(&json!({"query": "hi"})),
        )
        .await;
    res.assert_error(403, "forbidden");
    assert!(res.header("set-cookie").is_none());
    assert_eq!(res.header("x-request-id"), Some(id.as_str()));
    assert_eq!(logged(&id), Some((json!("/chat"), json!(403))));
    assert_nothing_reached_dify(&app);
}
