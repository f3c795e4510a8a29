//! The page in other sites (API.md §8): who may frame it, the identity cookie in a
//! third-party iframe, Dify's WebApp settings, and voice in and out.

use std::process::Command;

use crate::support::{TestApp, TestResponse, assert_nothing_reached_dify, no_site_row, vars};
use bytes::Bytes;
use dify_emulator::{Recorded, Reply, Step};
use reqwest::Method;
use serde_json::json;

const BOUNDARY: &str = "----dify-bff-embedding-boundary-Qx81";
const SITE_A: &str = "https://www.example.com";
const SITE_B: &str = "http://localhost:8080";
const MESSAGE_ID: &str = "7d9f3a52-52a4-4f57-9d59-2e3f8c9b0a11";
/// The first bytes of an MP3 frame: what an audio answer looks like.
const MP3: &[u8] = &[
    0xff, 0xfb, 0x90, 0x64, 0x00, 0x0f, 0xf0, 0x00, 0x00, 0x69, 0x00,
];

fn embedding(origins: &str) -> Vec<(&'static str, String)> {
    vars(&[("EMBED_ORIGINS", origins)])
}

fn csp(res: &TestResponse) -> Vec<String> {
    res.header("content-security-policy")
        .unwrap_or_default()
        .split(';')
        .map(|d| d.trim().to_owned())
        .collect()
}

/// A multipart body of text fields and one `file` part.
fn form(fields: &[(&str, &str)], file: &[u8], content_type: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"voice.webm\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(file);
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

async fn audio_to_text(app: &TestApp, body: Vec<u8>) -> TestResponse {
    app.browser
        .send(
            app.browser
                .request(Method::POST, "/audio-to-text")
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body),
        )
        .await
}

/// The Dify `user` of the default browser, learnt from a harmless call.
async fn our_user(app: &TestApp) -> String {
    assert_eq!(app.browser.get("/conversations").await.status, 200);
    app.upstream_requests("/v1/conversations")
        .last()
        .and_then(Recorded::user)
        .expect("a user")
}

// ---- framing ---------------------------------------------------------------------------------

#[tokio::test]
async fn listed_sites_may_frame_the_page_and_no_others() {
    let app = TestApp::spawn_with_env(embedding(&format!("{SITE_A}, {SITE_B}"))).await;
    let res = app.browser.get("/").await;
    assert_eq!(res.status, 200);
    let csp = csp(&res);
    assert!(
        csp.contains(&format!("frame-ancestors 'self' {SITE_A} {SITE_B}")),
        "{csp:?}"
    );
    assert_eq!(
        csp.iter()
            .filter(|d| d.starts_with("frame-ancestors"))
            .count(),
        1,
        "{csp:?}"
    );
    assert!(
        res.header("x-frame-options").is_none(),
        "X-Frame-Options cannot name other sites and would refuse them"
    );
}

#[tokio::test]
async fn the_embed_script_is_served_as_javascript() {
    let app = TestApp::spawn().await;
    let res = app.browser.get("/embed.js").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.contains("javascript")),
        "{:?}",
        res.headers
    );
    assert!(res.text().contains("currentScript"));
}

#[tokio::test]
async fn with_embed_origins_the_cookie_is_samesite_none_secure_partitioned() {
    let app = TestApp::spawn_with_env(embedding(SITE_A)).await;
    let res = app.browser.get("/conversations").await;
    assert_eq!(res.status, 200);
    let cookie = res.header("set-cookie").expect("a cookie").to_owned();
    assert!(cookie.starts_with("dify_bff_uid="), "{cookie}");
    for attribute in [
        "HttpOnly",
        "SameSite=None",
        "Secure",
        "Partitioned",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
}

#[tokio::test]
async fn with_embed_origins_over_https_the_cookie_keeps_its_host_prefix() {
    let app = TestApp::spawn_with_env(embedding(SITE_A)).await;
    let res = app
        .browser
        .send(
            app.browser
                .request(Method::GET, "/conversations")
                .header("x-forwarded-proto", "https"),
        )
        .await;
    let cookie = res.header("set-cookie").expect("a cookie").to_owned();
    assert!(cookie.starts_with("__Host-dify_bff_uid="), "{cookie}");
    assert!(cookie.contains("Partitioned"), "{cookie}");
}

#[test]
fn a_bad_embed_origin_stops_start_up_with_exit_2_naming_the_variable() {
    for bad in [
        "*",
        "https://*.example.com",
        "example.com",
        "https://example.com/shop",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dify-bff"))
            .env_clear()
            .env("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
            .env("EMBED_ORIGINS", format!("{SITE_A},{bad}"))
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        assert!(err.contains("EMBED_ORIGINS"), "{err}");
    }
}

// ---- /site -----------------------------------------------------------------------------------

#[tokio::test]
async fn site_relays_difys_webapp_settings_for_our_user() {
    let app = TestApp::spawn().await;
    let site = json!({
        "title": "Support", "chat_color_theme": "#1C64F2", "default_language": "zh-Hans",
        "copyright": "Example Ltd", "privacy_policy": "https://example.com/privacy",
        "custom_disclaimer": "", "icon_type": "emoji", "icon": "🤖",
    });
    app.emulator
        .script("GET", "/v1/site", Reply::json(200, &site));
    let res = app.browser.get("/site?user=mallory").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), site);
    let sent = app.upstream_requests("/v1/site");
    assert_eq!(sent.len(), 1);
    let user = sent[0].user().expect("a user");
    assert_ne!(user, "mallory");
    assert_eq!(user, our_user(&app).await);
}

#[tokio::test]
async fn site_on_dify_before_1_4_is_404_not_found() {
    let app = TestApp::spawn().await;
    // Werkzeug's answer for a route that does not exist, as Dify's error handler shapes it.
    app.emulator.script(
        "GET",
        "/v1/site",
        Reply::json(
            404,
            &json!({"message": "The requested URL was not found on the server.", "status": 404}),
        ),
    );
    app.browser
        .get("/site")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn site_on_dify_0_15_whose_404_is_werkzeugs_html_page_is_404_not_found() {
    // No script: the emulator answers /v1/site as Dify 0.15.3 does, with its HTML 404 page.
    let app = TestApp::spawn().await;
    app.browser
        .get("/site")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn site_of_an_app_without_webapp_settings_is_404_not_found() {
    let app = TestApp::spawn().await;
    app.emulator.script("GET", "/v1/site", no_site_row());
    app.browser
        .get("/site")
        .await
        .assert_error(404, "not_found");
}

// ---- voice -----------------------------------------------------------------------------------

#[tokio::test]
async fn audio_to_text_streams_the_recording_with_our_user_and_relays_the_text() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/v1/audio-to-text",
        Reply::json(200, &json!({"text": "你好, where is my order?"})),
    );
    let recording = vec![0x1a_u8; 40_000];
    let body = form(&[("user", "someone-else")], &recording, "audio/webm");
    let res = audio_to_text(&app, body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json(), json!({"text": "你好, where is my order?"}));

    let ours = our_user(&app).await;
    let sent = app.upstream_requests("/v1/audio-to-text");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user().as_deref(), Some(ours.as_str()));
    let sent_body = String::from_utf8_lossy(&sent[0].body);
    assert!(
        !sent_body.contains("someone-else"),
        "the smuggled user stayed out"
    );
    assert_eq!(sent_body.matches("name=\"user\"").count(), 1);
    assert!(sent_body.contains("Content-Type: audio/webm"));
    let at = sent[0]
        .body
        .windows(recording.len())
        .position(|w| w == recording.as_slice());
    assert!(at.is_some(), "the recording reached Dify byte for byte");
}

#[tokio::test]
async fn audio_to_text_over_max_upload_bytes_is_413_and_dify_gets_no_whole_file() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_UPLOAD_BYTES", "65536")])).await;
    let body = form(&[], &vec![0_u8; 200_000], "audio/webm");
    audio_to_text(&app, body)
        .await
        .assert_error(413, "payload_too_large");
    assert!(
        app.upstream_requests("/v1/audio-to-text")
            .iter()
            .all(|r| r.body_len < 200_000)
    );
}

#[tokio::test]
async fn audio_to_text_without_multipart_is_415_before_dify() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .post_json("/audio-to-text", &json!({"file": "x"}))
        .await;
    res.assert_error(415, "unsupported_media_type");
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn text_to_audio_streams_difys_audio_with_its_type_for_our_user() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/v1/text-to-audio",
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "audio/mpeg".into())],
            steps: vec![
                Step::Send(Bytes::from_static(&MP3[..5])),
                Step::Send(Bytes::from_static(&MP3[5..])),
            ],
        },
    );
    let res = app
        .browser
        .post_json(
            "/text-to-audio",
            &json!({"message_id": MESSAGE_ID, "user": "mallory", "streaming": false}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("audio/mpeg"));
    assert_eq!(&res.body[..], MP3);

    let ours = our_user(&app).await;
    let sent = app.upstream_requests("/v1/text-to-audio");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].json(),
        Some(json!({"message_id": MESSAGE_ID, "user": ours}))
    );
}

#[tokio::test]
async fn text_to_audio_that_is_not_audio_is_never_served_as_a_page() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/v1/text-to-audio",
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "text/html".into())],
            steps: vec![Step::Send(Bytes::from_static(b"<script>alert(1)</script>"))],
        },
    );
    let res = app
        .browser
        .post_json("/text-to-audio", &json!({"text": "Hello"}))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn text_to_audio_needs_a_message_id_or_a_text() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({"text": "   "}),
        json!({"message_id": "../../apps"}),
        json!({"message_id": 7}),
    ] {
        let res = app.browser.post_json("/text-to-audio", &body).await;
        res.assert_error(400, "invalid_param");
    }
    assert_nothing_reached_dify(&app);
}

#[tokio::test]
async fn text_to_audio_relays_difys_error_in_our_shape() {
    let app = TestApp::spawn().await;
    app.emulator.script(
        "POST",
        "/v1/text-to-audio",
        Reply::json(
            400,
            &json!({"code": "invalid_param", "message": "TTS is not enabled", "status": 400}),
        ),
    );
    let res = app
        .browser
        .post_json("/text-to-audio", &json!({"text": "Hello"}))
        .await;
    res.assert_error(400, "invalid_param");
}

#[tokio::test]
async fn voice_calls_are_charged_to_the_same_rate_as_uploads() {
    let app = TestApp::spawn_with_env(vars(&[("RATE_LIMIT_PER_MINUTE", "2")])).await;
    app.emulator.script(
        "POST",
        "/v1/audio-to-text",
        Reply::json(200, &json!({"text": "hi"})),
    );
    let first = audio_to_text(&app, form(&[], b"abc", "audio/webm")).await;
    assert_eq!(first.status, 200);
    app.emulator.script(
        "POST",
        "/v1/text-to-audio",
        Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "audio/mpeg".into())],
            steps: vec![Step::Send(Bytes::from_static(MP3))],
        },
    );
    let second = app
        .browser
        .post_json("/text-to-audio", &json!({"text": "Hello"}))
        .await;
    assert_eq!(second.status, 200);
    let third = audio_to_text(&app, form(&[], b"abc", "audio/webm")).await;
    third.assert_error(429, "rate_limited");
    assert!(third.header("retry-after").is_some());
    assert_eq!(app.upstream_requests("/v1/audio-to-text").len(), 1);
}
