//! `WORKER_THREADS`: connections spread over several single-threaded runtimes behave as one
//! server: shared limits, one identity, and every worker drained at shutdown.

use std::time::Duration;

use crate::support::{TestApp, read_stream, sse_events, vars};
use dify_emulator::EmulatorOptions;
use serde_json::json;

async fn slow_app(workers: &str, extra: &[(&'static str, &str)]) -> TestApp {
    let mut all = vec![("WORKER_THREADS", workers)];
    all.extend_from_slice(extra);
    TestApp::spawn_with(
        vars(&all),
        EmulatorOptions {
            slow_interval: Duration::from_millis(300),
            ..EmulatorOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn streams_on_different_workers_share_the_per_identity_limit() {
    let app = slow_app("4", &[("MAX_STREAMS_PER_IDENTITY", "3")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = app
            .browser
            .chat_stream(&json!({"query": "SLOW please"}))
            .await;
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }
    app.browser
        .chat(&json!({"query": "SLOW please"}))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 3);
}

#[tokio::test]
async fn every_stream_is_relayed_whole_whichever_worker_serves_it() {
    let app = slow_app("3", &[]).await;
    let browsers: Vec<_> = (0..6).map(|_| app.new_browser()).collect();
    let streams = browsers
        .iter()
        .map(|b| async move { b.chat_stream(&json!({"query": "hello"})).await });
    for response in futures_util::future::join_all(streams).await {
        assert_eq!(response.status(), 200);
        let events = sse_events(&read_stream(response).await);
        assert_eq!(
            events.last().map(|e| e["event"].clone()),
            Some(json!("message_end"))
        );
    }
}

#[tokio::test]
async fn shutdown_ends_the_streams_of_every_worker_and_the_server_exits() {
    let mut app = TestApp::spawn_with_config(
        vars(&[("WORKER_THREADS", "3")]),
        EmulatorOptions::default(),
        |c| c.shutdown_grace = Duration::from_millis(200),
    )
    .await;
    let browsers: Vec<_> = (0..3).map(|_| app.new_browser()).collect();
    let mut streams = Vec::new();
    for browser in &browsers {
        let mut stream = browser.chat_stream(&json!({"query": "SLOW please"})).await;
        assert_eq!(stream.status(), 200);
        let _ = stream.chunk().await;
        streams.push(stream);
    }
    let server = app.begin_shutdown();
    for stream in streams {
        let events = sse_events(&read_stream(stream).await);
        let last = events.last().cloned().unwrap_or_default();
        assert_eq!(last["code"], "shutting_down", "{events:?}");
    }
    let exit = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server exits once every worker has drained");
    assert!(exit.is_ok_and(|r| r.is_ok()));
}
