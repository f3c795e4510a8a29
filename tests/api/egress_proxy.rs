//! Dify reached through an egress proxy: `HTTP_PROXY` (and `NO_PROXY`) in the environment are
//! honoured for every call, as operators behind a corporate proxy expect. The server runs as
//! its own process, so its environment is its own.

use std::process::Stdio;

use dify_emulator::{Emulator, EmulatorOptions};

use crate::cli::{Running, command, free_port, wait_healthy};
use crate::support::{API_KEY, SESSION_SECRET};

async fn emulator() -> Emulator {
    Emulator::start(EmulatorOptions {
        api_key: API_KEY.to_owned(),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator starts")
}

/// The server with `base_url` and the proxy variables `env`; its port.
fn server(base_url: &str, env: &[(&str, String)]) -> (Running, u16) {
    let port = free_port();
    let mut cmd = command();
    cmd.env("PORT", port.to_string())
        .env("DIFY_BASE_URL", base_url)
        .env("DIFY_API_KEY", API_KEY)
        .env("SESSION_SECRET", SESSION_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let running = Running(cmd.spawn().expect("the server starts"));
    wait_healthy(port);
    (running, port)
}

async fn chat(port: u16) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/chat"))
        .json(&serde_json::json!({"query": "hello", "response_mode": "blocking"}))
        .send()
        .await
        .expect("the server answers")
}

#[tokio::test]
async fn calls_to_dify_go_through_the_proxy_the_environment_names() {
    let proxy = emulator().await;
    let proxy_url = format!("http://{}", proxy.addr());
    // `.invalid` never resolves: an answer can only have come through the proxy.
    let (_server, port) = server(
        "http://dify.invalid/v1",
        &[("HTTP_PROXY", proxy_url.clone())],
    );
    let answer = chat(port).await;
    assert_eq!(answer.status(), 200);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.path == "/v1/chat-messages"),
        "the chat call reached Dify through {proxy_url}"
    );
}

#[tokio::test]
async fn a_host_in_no_proxy_is_called_directly() {
    let dify = emulator().await;
    // Nothing listens at the proxy's address: going through it would fail.
    let dead_proxy = format!("http://127.0.0.1:{}", free_port());
    let (_server, port) = server(
        &dify.base_url(),
        &[
            ("HTTP_PROXY", dead_proxy),
            ("NO_PROXY", "127.0.0.1".to_owned()),
        ],
    );
    assert_eq!(chat(port).await.status(), 200);
}
