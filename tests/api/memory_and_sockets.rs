//! What one client can take of the server: request body bytes held in memory, and sockets.

use std::time::Duration;

use crate::support::raw::connect;
use crate::support::{TestApp, vars};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a `POST /chat` head declaring `length` body bytes, then `body`.
async fn post_chat(stream: &mut TcpStream, app: &TestApp, length: usize, body: &[u8]) {
    let head = format!(
        "POST /chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
}

/// The status line's code of the next response on `stream`.
async fn status_of(stream: &mut TcpStream) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ').nth(1)?.parse().ok()
}

fn chat_body(len: usize) -> Vec<u8> {
    let padding = "x".repeat(len.saturating_sub(40));
    let body =
        format!("{{\"query\": \"hi\", \"response_mode\": \"blocking\", \"p\": \"{padding}\"}}");
    body.into_bytes()
}

#[tokio::test]
async fn bodies_held_by_all_requests_together_are_capped_with_503() {
    let app = TestApp::spawn_with_env(vars(&[
        ("MAX_BODY_BYTES", "1000"),
        ("MAX_BUFFERED_BODY_BYTES", "1500"),
    ]))
    .await;
    let mut slow = connect(&app).await;
    post_chat(&mut slow, &app, 1000, &[b' '; 900]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body = chat_body(700);
    let mut second = connect(&app).await;
    post_chat(&mut second, &app, body.len(), &body).await;
    assert_eq!(
        status_of(&mut second).await,
        Some(503),
        "over the shared budget"
    );

    drop(slow);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect(&app).await;
    post_chat(&mut third, &app, body.len(), &body).await;
    assert_eq!(
        status_of(&mut third).await,
        Some(200),
        "the budget is freed"
    );
}

#[test]
fn a_buffer_budget_smaller_than_one_body_is_refused_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dify-bff"))
        .env_clear()
        .env("DIFY_API_KEY", "app-abcdefghijklmnopqrstuvwx")
        .env("MAX_BODY_BYTES", "2000")
        .env("MAX_BUFFERED_BODY_BYTES", "1000")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MAX_BUFFERED_BODY_BYTES"));
}

/// Whether the server closes a fresh connection at once (without answering a request on it).
async fn is_closed_at_once(app: &TestApp) -> bool {
    let mut stream = connect(app).await;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    let _ = stream.write_all(head.as_bytes()).await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

#[tokio::test]
async fn one_peer_gets_at_most_max_connections_per_peer() {
    let app = TestApp::spawn_with_env(vars(&[("MAX_CONNECTIONS_PER_PEER", "2")])).await;
    let first = connect(&app).await;
    let second = connect(&app).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        is_closed_at_once(&app).await,
        "a third connection is closed"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !is_closed_at_once(&app).await,
        "a freed place is usable again"
    );
    drop(second);
}

#[tokio::test]
async fn trusted_proxies_are_not_limited_per_peer() {
    let app = TestApp::spawn_with_env(vars(&[
        ("MAX_CONNECTIONS_PER_PEER", "1"),
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
    ]))
    .await;
    let _held = [connect(&app).await, connect(&app).await];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!is_closed_at_once(&app).await);
}
