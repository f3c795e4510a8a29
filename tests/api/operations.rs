//! Probes, metrics, request ids, logs and graceful shutdown.

use std::time::Duration;

use crate::support::{TestApp, blocking, read_stream, sse_events};
use dify_emulator::{EmulatorOptions, Reply};
use reqwest::Method;
use reqwest::cookie::CookieStore;
use serde_json::json;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let res = app.browser.get("/healthz").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_is_200_when_dify_accepts_our_key() {
    let app = TestApp::spawn().await;
    let res = app.browser.get("/readyz").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let probe = app.upstream_requests("/v1/info");
    assert_eq!(probe.len(), 1);
    assert!(probe[0].header("authorization").is_some());
}

#[tokio::test]
async fn readyz_is_503_when_dify_refuses_the_key() {
    let app = TestApp::spawn_with_env(vec![(
        "DIFY_API_KEY",
        "app-WrongKeyWrongKeyWrongKey0".into(),
    )])
    .await;
    let res = app.browser.get("/readyz").await;
    assert_eq!(res.status, 503);
    assert!(res.json()["message"].as_str().unwrap().contains("Dify"));
}

#[tokio::test]
async fn readyz_is_503_when_dify_is_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = TestApp::spawn_with_env(vec![(
        "DIFY_BASE_URL",
        format!("http://127.0.0.1:{port}/v1"),
    )])
    .await;
    assert_eq!(app.browser.get("/readyz").await.status, 503);
}

#[tokio::test]
async fn readyz_caches_its_answer_briefly() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        assert_eq!(app.browser.get("/readyz").await.status, 200);
    }
    assert_eq!(app.upstream_requests("/v1/info").len(), 1);
}

#[tokio::test]
async fn metrics_report_requests_streams_bytes_and_tokens() {
    let app = TestApp::spawn().await;
    let body = read_stream(app.browser.chat_stream(&json!({"query": "count me"})).await).await;
    assert_eq!(sse_events(&body).last().unwrap()["event"], "message_end");
    app.browser.get("/conversations").await;
    let res = app.browser.get("/metrics").await;
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text();
    for needle in [
        "difybff_http_requests_total{method=\"GET\",route=\"/conversations\",app=\"default\",status=\"200\"}",
        "difybff_http_request_duration_seconds_bucket",
        "difybff_open_streams",
        "difybff_stream_bytes_total",
        "difybff_stream_first_byte_seconds",
        "difybff_tokens_total{kind=\"completion\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test]
async fn a_blocking_answers_usage_and_cost_reach_the_metrics() {
    let app = TestApp::spawn().await;
    // A currency no other test uses: the metrics are the process's, shared by every test.
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::json(
            200,
            &json!({"event": "message", "task_id": "t", "id": "m", "answer": "hi",
                    "metadata": {"usage": {"prompt_tokens": 30, "completion_tokens": 12,
                    "total_tokens": 42, "total_price": "0.000042", "currency": "XTS"}}}),
        ),
    );
    let res = app.browser.chat(&blocking("what does it cost?")).await;
    assert_eq!(res.status, 200);
    let text = app.browser.get("/metrics").await.text();
    assert!(
        text.contains("difybff_cost_micros_total{currency=\"XTS\"} 42"),
        "no cost of the blocking answer in:\n{text}"
    );
}

#[tokio::test]
async fn metrics_label_unknown_methods_as_other_so_clients_cannot_add_series() {
    let app = TestApp::spawn().await;
    for method in ["BREWCOFFEE", "WHEN"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let res = app
            .browser
            .send(app.browser.request(method, "/conversations"))
            .await;
        assert_eq!(res.status, 405);
    }
    let text = app.browser.get("/metrics").await.text();
    assert!(
        text.contains(
            "difybff_http_requests_total{method=\"OTHER\",route=\"/conversations\",app=\"default\",status=\"405\"}"
        ),
        "no OTHER series in:\n{text}"
    );
    assert!(!text.contains("BREWCOFFEE") && !text.contains("WHEN"));
}

#[tokio::test]
async fn metrics_addr_moves_metrics_off_the_main_port() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let app = TestApp::spawn_with_env(vec![("METRICS_ADDR", metrics_addr.to_string())]).await;
    app.browser
        .get("/metrics")
        .await
        .assert_error(404, "not_found");
    let mut res = None;
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(format!("http://{metrics_addr}/metrics")).await {
            res = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = res.expect("metrics listener answers");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_request_id_is_returned_and_sent_to_dify_as_trace_id() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::GET, "/conversations")
                .header("x-request-id", "trace-me_123"),
        )
        .await;
    assert_eq!(res.header("x-request-id"), Some("trace-me_123"));
    let sent = app.upstream_requests("/v1/conversations");
    assert_eq!(sent[0].header("x-trace-id"), Some("trace-me_123"));
}

#[tokio::test]
async fn an_unsafe_request_id_is_replaced_by_a_generated_one() {
    let app = TestApp::spawn().await;
    let res = app
        .browser
        .send(
            app.browser
                .request(reqwest::Method::GET, "/conversations")
                .header("x-request-id", "not safe; at all"),
        )
        .await;
    let id = res.header("x-request-id").unwrap().to_owned();
    assert_ne!(id, "not safe; at all");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    let sent = app.upstream_requests("/v1/conversations");
    assert_eq!(sent[0].header("x-trace-id"), Some(id.as_str()));
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish_and_refuses_new_ones() {
    let mut app = TestApp::spawn_with(
        vec![("SHUTDOWN_GRACE_SECS", "30".into())],
        EmulatorOptions {
            // 30 pieces: the answer takes 750 ms, long enough to outlast the checks below.
            slow_interval: Duration::from_millis(25),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let mut stream = app
        .browser
        .chat_stream(&json!({"query": "SLOW please"}))
        .await;
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let server = app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.browser
        .chat(&json!({"query": "too late"}))
        .await
        .assert_error(503, "shutting_down");
    assert_eq!(app.browser.get("/readyz").await.status, 503);
    assert_eq!(app.browser.get("/healthz").await.status, 200);

    let rest = read_stream(stream).await;
    let events = sse_events(&rest);
    assert_eq!(
        events.last().unwrap()["event"],
        "message_end",
        "the answer finished"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server exits once no stream is left");
    assert!(exit.unwrap().is_ok());
}

#[tokio::test]
async fn streams_still_open_after_the_grace_end_with_shutting_down() {
    let mut app = TestApp::spawn_with_config(vec![], EmulatorOptions::default(), |c| {
        c.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let mut stream = app
        .browser
        .chat_stream(&json!({"query": "SLOW please"}))
        .await;
    stream.chunk().await.unwrap().unwrap();
    let server = app.begin_shutdown();
    let rest = read_stream(stream).await;
    let events = sse_events(&rest);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["code"], "shutting_down");
    assert_eq!(last["status"], 503);
    let exit = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server exits");
    assert!(exit.unwrap().is_ok());
}

#[tokio::test]
async fn request_log_lines_carry_fields_but_no_contents_or_cookies() {
    let app = TestApp::spawn().await;
    let marker = "confidential-question-7f3a";
    app.browser
        .chat(&json!({"query": marker, "response_mode": "blocking"}))
        .await;
    let res = app.browser.get("/conversations").await;
    let request_id = res.header("x-request-id").unwrap().to_owned();
    let cookie = app
        .browser
        .jar
        .cookies(&app.browser.url("/").parse().unwrap())
        .unwrap();
    let cookie_value = cookie
        .to_str()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_owned();

    let logs = crate::support::logs::captured();
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["request_id"] == request_id.as_str())
        .expect("a log line for the request");
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/conversations");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].is_number());
    let identity = line["identity"].as_str().unwrap();
    assert_eq!(identity.len(), 12, "a short hash, not the id");
    assert!(!logs.contains(marker), "message contents are never logged");
    let leak = logs
        .lines()
        .find(|l| l.contains(&cookie_value))
        .unwrap_or_default();
    assert!(leak.is_empty(), "cookies are never logged: {leak}");
}

#[tokio::test]
async fn page_requests_are_logged_as_the_page_and_unknown_paths_as_unmatched() {
    let app = TestApp::spawn().await;
    let logged_route = |request_id: &str| {
        crate::support::logs::captured()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "request" && l["request_id"] == request_id)
            .map(|l| l["route"].clone())
    };
    for (path, route) in [
        ("/", "page"),
        ("/js/main.js", "page"),
        ("/no-such-thing", "unmatched"),
    ] {
        let id = format!("page-log-{}", uuid::Uuid::new_v4());
        app.browser
            .send(
                app.browser
                    .request(reqwest::Method::GET, path)
                    .header("x-request-id", &id),
            )
            .await;
        assert_eq!(logged_route(&id), Some(serde_json::json!(route)), "{path}");
    }
}
