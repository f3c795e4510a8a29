//! Start-up checks Dify once (`GET /info` with the key), logs what is wrong in one line an
//! operator can act on, keeps serving and retrying until Dify answers, and `/readyz` gives the
//! same reason. The key never shows.

use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use dify_emulator::EmulatorOptions;
use serde_json::{Value, json};

use crate::support::{TestApp, logs, vars};

const WRONG_KEY: &str = "app-WrongKeyNeverLoggedEither0";

async fn spawn_checked(pairs: &[(&'static str, &str)]) -> TestApp {
    TestApp::spawn_with_config(vars(pairs), EmulatorOptions::default(), |c| {
        c.check_dify_at_start = true;
    })
    .await
}

/// The first captured log line that contains every one of `needles`.
async fn wait_for_log(needles: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = logs::captured()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .find_map(|line| serde_json::from_str::<Value>(line).ok());
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} in:\n{}",
            logs::captured()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn closed_port() -> u16 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_key_is_logged_at_start_up_as_refused_and_readyz_says_the_same() {
    let app = spawn_checked(&[("DIFY_API_KEY", WRONG_KEY)]).await;
    let base = app.emulator.base_url();
    let line = wait_for_log(&["refused DIFY_API_KEY", &base]).await;
    assert_eq!(line["level"], "ERROR");
    assert!(line["message"].as_str().unwrap().contains("401"), "{line}");

    let res = app.browser.get("/readyz").await;
    assert_eq!(res.status, 503);
    let message = res.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("refused DIFY_API_KEY"), "{message}");
    assert!(!message.contains(WRONG_KEY) && !res.text().contains("WrongKey"));
    assert!(!logs::captured().contains("WrongKey"), "the key was logged");
}

#[tokio::test]
async fn a_base_url_without_v1_is_logged_as_a_question_about_v1() {
    let app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.check_dify_at_start = true;
        for app in &mut c.apps.apps {
            let without_v1 = app.base_url.as_str().replace("/v1/", "/");
            app.base_url = without_v1.parse().unwrap();
        }
    })
    .await;
    let origin = app.emulator.base_url().replace("/v1", "/");
    let line = wait_for_log(&["does DIFY_BASE_URL end in /v1?", &origin]).await;
    assert!(line["message"].as_str().unwrap().contains("404"), "{line}");

    let res = app.browser.get("/readyz").await;
    assert_eq!(res.status, 503);
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap()
            .contains("does DIFY_BASE_URL end in /v1?"),
        "{}",
        res.text()
    );
}

#[tokio::test]
async fn nothing_listening_is_logged_as_connection_refused_not_as_an_error_sending_a_request() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let app = spawn_checked(&[("DIFY_BASE_URL", &url)]).await;
    let target = format!("127.0.0.1:{port}");
    let line = wait_for_log(&["nothing is listening at", &target]).await;
    let message = line["message"].as_str().unwrap();
    assert!(message.contains("connection refused"), "{message}");
    assert!(!message.contains("error sending request"), "{message}");

    let res = app.browser.get("/readyz").await;
    assert_eq!(res.status, 503);
    assert!(
        res.json()["message"]
            .as_str()
            .unwrap()
            .contains(&format!("nothing is listening at {target}")),
        "{}",
        res.text()
    );
    assert_eq!(
        app.browser.get("/healthz").await.status,
        200,
        "still serving"
    );
}

#[tokio::test]
async fn an_unknown_host_is_logged_as_a_name_that_does_not_resolve() {
    let app = spawn_checked(&[("DIFY_BASE_URL", "http://dify.invalid/v1")]).await;
    let line = wait_for_log(&["cannot resolve the host of DIFY_BASE_URL (dify.invalid)"]).await;
    assert_eq!(line["level"], "ERROR");
    drop(app);
}

#[tokio::test]
async fn start_up_keeps_checking_and_logs_when_dify_comes_up() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let app = spawn_checked(&[("DIFY_BASE_URL", &url)]).await;
    wait_for_log(&["nothing is listening at", &format!("127.0.0.1:{port}")]).await;

    // Dify comes up on that port.
    let dify = axum::Router::new().route(
        "/v1/info",
        get(|| async { Json(json!({"name": "late", "description": "", "tags": []})) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, dify).await });

    wait_for_log(&["Dify answers at", &url, "now"]).await;
    assert_eq!(app.browser.get("/readyz").await.status, 200);
}
