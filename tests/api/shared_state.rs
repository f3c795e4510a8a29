//! Several replicas, one behaviour (API.md §7): rate limits, stream slots and token budgets
//! shared through a real Redis, resumable streams (here and on another replica), and Redis
//! going away. The in-process tests at the end need no Redis.

use std::time::Duration;

use dify_emulator::{EmulatorOptions, Reply, Step};
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::support::redis::RedisServer;
use crate::support::{
    Browser, TestApp, TestResponse, blocking, eventually, fixture, fixture_body, late_answer,
    leave_early, logs, read_stream, sse_events, tokens_counted, usage, vars,
};

/// The Redis tests share the process-wide `/metrics` gauge; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CAPTURE: &str = "02-chat-streaming-new-conversation.http";

/// A replica sharing `redis`, with resuming on (a grace long enough for any test).
async fn replica(redis: &RedisServer, extra: &[(&'static str, &str)]) -> TestApp {
    let mut all = vars(&[("STREAM_RESUME_GRACE_SECS", "30")]);
    all.extend(vars(extra));
    all.push(("REDIS_URL", redis.url()));
    TestApp::spawn_with_env(all).await
}

/// `browser`'s cookies (so its identity) talking to `app`.
fn on(app: &TestApp, browser: &Browser) -> Browser {
    Browser {
        base: app.base.clone(),
        client: browser.client.clone(),
        jar: browser.jar.clone(),
    }
}

/// Dify's captured stream, each event a moment after the last; and its whole body.
fn paced(pause: Duration) -> (Reply, Vec<u8>) {
    let capture = Reply::from_capture(&fixture(CAPTURE)).unwrap();
    let steps = capture
        .steps
        .iter()
        .flat_map(|s| [Step::Pause(pause), s.clone()])
        .collect();
    (Reply { steps, ..capture }, fixture_body(CAPTURE))
}

/// A stream whose first event comes, then nothing: it holds its slot until it is dropped.
fn hanging() -> Reply {
    let capture = Reply::from_capture(&fixture(CAPTURE)).unwrap();
    let first = capture
        .steps
        .iter()
        .find(|s| matches!(s, Step::Send(_)))
        .cloned()
        .unwrap();
    Reply {
        steps: vec![first, Step::Hang],
        ..capture
    }
}

/// Reads a streamed response until it has at least `n` bytes; returns them and the response.
async fn read_at_least(mut response: reqwest::Response, n: usize) -> (Vec<u8>, reqwest::Response) {
    let mut got = Vec::new();
    while got.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("bytes keep coming")
            .expect("readable")
            .expect("not ended yet");
        got.extend_from_slice(&chunk);
    }
    (got, response)
}

fn stream_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-stream-id")
        .and_then(|v| v.to_str().ok())
        .expect("a streamed answer carries X-Stream-Id")
        .to_owned()
}

async fn resume(browser: &Browser, id: &str, offset: &str) -> reqwest::Response {
    browser
        .request(Method::GET, &format!("/chat/streams/{id}?offset={offset}"))
        .send()
        .await
        .expect("sent")
}

async fn metric(app: &TestApp, name: &str) -> Option<String> {
    let text = app.browser.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------
// Two replicas, one Redis

#[tokio::test]
async fn the_rate_limit_holds_across_two_replicas() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = [("RATE_LIMIT_PER_MINUTE", "2")];
    let (a, b) = (replica(&redis, &limit).await, replica(&redis, &limit).await);
    let user_on_b = on(&b, &a.browser);

    assert_eq!(a.browser.chat(&blocking("one")).await.status, 200);
    assert_eq!(user_on_b.chat(&blocking("two")).await.status, 200);
    let third = a.browser.chat(&blocking("three")).await;
    third.assert_error(429, "rate_limited");
    assert!(third.header("retry-after").is_some());
    let other = b.new_browser();
    assert_eq!(
        other.chat(&blocking("mine")).await.status,
        200,
        "identities are separate"
    );
    let reached = |app: &TestApp| app.upstream_requests("/v1/chat-messages").len();
    assert_eq!(
        (reached(&a), reached(&b)),
        (1, 2),
        "the refused chat reached no Dify"
    );
}

#[tokio::test]
async fn stream_slots_hold_across_two_replicas() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limit = [
        ("MAX_STREAMS_PER_IDENTITY", "1"),
        ("STREAM_RESUME_GRACE_SECS", "0"),
    ];
    let (a, b) = (replica(&redis, &limit).await, replica(&redis, &limit).await);
    a.emulator.script("POST", "/chat-messages", hanging());
    let user_on_b = on(&b, &a.browser);

    let open = a.browser.chat_stream(&json!({"query": "long"})).await;
    assert_eq!(open.status(), 200);
    user_on_b
        .chat(&blocking("meanwhile"))
        .await
        .assert_error(429, "rate_limited");
    assert!(b.upstream_requests("/v1/chat-messages").is_empty());

    drop(open);
    eventually(
        "the slot is free on the other replica",
        Duration::from_secs(5),
        async || user_on_b.chat(&blocking("now")).await.status == 200,
    )
    .await;
}

#[tokio::test]
async fn a_replica_that_is_gone_frees_its_slots_when_their_lease_lapses() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_millis(900);
    let url = redis.url();
    let limit = vars(&[("MAX_STREAMS_PER_IDENTITY", "1"), ("REDIS_URL", &url)]);
    // Replica A runs on a runtime of its own, so that it can vanish without a goodbye.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let a_limit = limit.clone();
    let a_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let a = runtime.block_on(TestApp::spawn_with_config(
            a_limit,
            EmulatorOptions::default(),
            |c| c.shared.stream_lease = lease,
        ));
        a.emulator.script("POST", "/chat-messages", hanging());
        ready_tx.send((a.base.clone(), a.browser.clone())).unwrap();
        let _ = kill_rx.recv();
        std::mem::forget(a);
        runtime.shutdown_background();
    });
    let (_, user_on_a) = ready_rx.recv().unwrap();
    let b = TestApp::spawn_with_config(limit, EmulatorOptions::default(), |c| {
        c.shared.stream_lease = lease
    })
    .await;
    let user_on_b = on(&b, &user_on_a);

    let open = user_on_a.chat_stream(&json!({"query": "long"})).await;
    assert_eq!(open.status(), 200);
    tokio::time::sleep(lease * 2).await;
    user_on_b
        .chat(&blocking("meanwhile"))
        .await
        .assert_error(429, "rate_limited");

    kill_tx.send(()).unwrap();
    a_thread.join().unwrap();
    let gone = Instant::now();
    eventually("the dead replica's slot lapses", lease * 4, async || {
        user_on_b.chat(&blocking("now")).await.status == 200
    })
    .await;
    assert!(gone.elapsed() <= lease * 4);
    drop(open);
}

#[tokio::test]
async fn a_token_budget_holds_across_two_replicas() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let budget = [("TOKEN_BUDGET_PER_DAY", "1")];
    let (a, b) = (
        replica(&redis, &budget).await,
        replica(&redis, &budget).await,
    );
    let user_on_b = on(&b, &a.browser);

    let answer = a.browser.chat_blocking("spend", "").await;
    let spent = answer["metadata"]["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    assert!(spent > 0);
    eventually("B sees A's usage", Duration::from_secs(5), async || {
        usage(&user_on_b).await["tokens_used"] == spent
    })
    .await;
    user_on_b
        .chat(&blocking("more"))
        .await
        .assert_error(429, "budget_exceeded");
    assert!(b.upstream_requests("/v1/chat-messages").is_empty());
}

#[tokio::test]
async fn a_stream_cut_on_one_replica_is_resumed_on_another_byte_for_byte() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (replica(&redis, &[]).await, replica(&redis, &[]).await);
    let (reply, whole) = paced(Duration::from_millis(150));
    a.emulator.script("POST", "/chat-messages", reply);
    let user_on_b = on(&b, &a.browser);

    let response = a.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let (head, response) = read_at_least(response, 1).await;
    drop(response);

    let rest = resume(&user_on_b, &id, &head.len().to_string()).await;
    assert_eq!(rest.status(), 200);
    assert_eq!(rest.headers()["content-type"], "text/event-stream");
    let tail = read_stream(rest).await;
    assert_eq!(
        [head, tail].concat(),
        whole,
        "cut + resumed = the direct body"
    );
    assert!(
        a.emulator
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/stop")),
        "a resume within the grace is not stopped"
    );

    let stranger = b.new_browser();
    let res = TestResponse::read(resume(&stranger, &id, "0").await).await;
    res.assert_error(404, "not_found");
}

#[tokio::test]
async fn losing_redis_falls_back_to_this_replica_and_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let limit = [("RATE_LIMIT_PER_MINUTE", "1")];
    let (a, b) = (replica(&redis, &limit).await, replica(&redis, &limit).await);
    assert_eq!(metric(&a, "difybff_redis_up").await.as_deref(), Some("1"));
    let errors = || logs::captured().matches("Redis unreachable").count();
    let errors_before = errors();

    redis.stop();
    assert_eq!(
        a.browser.chat(&blocking("still")).await.status,
        200,
        "served without Redis"
    );
    eventually(
        "the gauge says Redis is down",
        Duration::from_secs(5),
        async || metric(&a, "difybff_redis_up").await.as_deref() == Some("0"),
    )
    .await;
    assert_eq!(
        on(&b, &a.browser).chat(&blocking("b")).await.status,
        200,
        "each replica alone"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        errors() - errors_before,
        2,
        "one ERROR line per replica, not per request"
    );
    assert_eq!(
        a.browser.get("/readyz").await.status,
        200,
        "readiness is about Dify"
    );

    redis.restart();
    eventually(
        "the gauge says Redis is back",
        Duration::from_secs(10),
        async || metric(&a, "difybff_redis_up").await.as_deref() == Some("1"),
    )
    .await;
    eventually(
        "both replicas use Redis again",
        Duration::from_secs(10),
        async || {
            let user = a.new_browser();
            user.chat(&blocking("fresh")).await.status == 200
                && on(&b, &user).chat(&blocking("shared")).await.status == 429
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Redis over TLS (`rediss://`), as managed Redis services require: a TLS-only server with a
// password and a certificate from a CA made for the test, so trusted only when named.

/// A replica sharing the TLS-only `redis` and trusting its CA (`REDIS_CA_CERT_FILE`).
async fn tls_replica(redis: &RedisServer, extra: &[(&'static str, &str)]) -> TestApp {
    let ca = redis.ca_file();
    let mut all = vec![("REDIS_CA_CERT_FILE", ca.as_str())];
    all.extend_from_slice(extra);
    replica(redis, &all).await
}

#[tokio::test]
async fn the_rate_limit_holds_across_two_replicas_sharing_a_tls_redis() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let limit = [("RATE_LIMIT_PER_MINUTE", "1")];
    let (a, b) = (
        tls_replica(&redis, &limit).await,
        tls_replica(&redis, &limit).await,
    );

    assert_eq!(a.browser.chat(&blocking("one")).await.status, 200);
    on(&b, &a.browser)
        .chat(&blocking("two"))
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(metric(&b, "difybff_redis_up").await.as_deref(), Some("1"));
    assert!(b.upstream_requests("/v1/chat-messages").is_empty());
}

#[tokio::test]
async fn a_stream_cut_on_one_replica_is_resumed_on_another_through_a_tls_redis() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let (a, b) = (
        tls_replica(&redis, &[]).await,
        tls_replica(&redis, &[]).await,
    );
    let (reply, whole) = paced(Duration::from_millis(150));
    a.emulator.script("POST", "/chat-messages", reply);

    let response = a.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let (head, response) = read_at_least(response, 1).await;
    drop(response);

    let rest = resume(&on(&b, &a.browser), &id, &head.len().to_string()).await;
    assert_eq!(rest.status(), 200);
    let tail = read_stream(rest).await;
    assert_eq!(
        [head, tail].concat(),
        whole,
        "cut + resumed = the direct body"
    );
}

#[tokio::test]
async fn a_tls_redis_whose_certificate_no_trusted_ca_signed_is_not_used_and_the_log_says_why() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let app = replica(&redis, &[("RATE_LIMIT_PER_MINUTE", "5")]).await;

    assert_eq!(
        app.browser.chat(&blocking("hi")).await.status,
        200,
        "served with this replica's own state"
    );
    eventually(
        "the refused certificate is logged",
        Duration::from_secs(5),
        async || {
            logs::captured().lines().any(|line| {
                line.contains("Redis unreachable")
                    && line.contains("invalid peer certificate")
                    && line.contains("REDIS_CA_CERT_FILE")
            })
        },
    )
    .await;
    assert_eq!(metric(&app, "difybff_redis_up").await.as_deref(), Some("0"));
}

// ---------------------------------------------------------------------------------------------
// One replica, no Redis

async fn resumable(extra: &[(&'static str, &str)]) -> TestApp {
    let mut all = vars(&[("STREAM_RESUME_GRACE_SECS", "30")]);
    all.extend(vars(extra));
    TestApp::spawn_with_env(all).await
}

#[tokio::test]
async fn an_ended_stream_is_resumable_for_stream_resume_secs_and_then_gone() {
    let app = resumable(&[("STREAM_RESUME_SECS", "1")]).await;
    // The second stream ends after the first has gone: the expiry starts again.
    for _ in 0..2 {
        let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
        let id = stream_id(&response);
        let whole = read_stream(response).await;
        let ended = Instant::now();
        let again = resume(&app.browser, &id, "0").await;
        assert_eq!(again.status(), 200);
        assert_eq!(read_stream(again).await, whole);

        eventually(
            "the stream is forgotten",
            Duration::from_secs(3),
            async || resume(&app.browser, &id, "0").await.status() == 404,
        )
        .await;
        assert!(
            ended.elapsed() >= Duration::from_millis(900),
            "kept its time"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_and_resumed_arrives_whole_and_dify_is_not_stopped() {
    let app = resumable(&[]).await;
    let (reply, whole) = paced(Duration::from_millis(100));
    app.emulator.script("POST", "/chat-messages", reply);

    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let (head, response) = read_at_least(response, 1).await;
    drop(response);
    tokio::time::sleep(Duration::from_millis(250)).await;

    let rest = resume(&app.browser, &id, &head.len().to_string()).await;
    assert_eq!(rest.status(), 200);
    assert_eq!(rest.headers()["x-stream-id"], id.as_str());
    let tail = read_stream(rest).await;
    assert_eq!([head, tail].concat(), whole);
    assert!(
        app.emulator
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/stop"))
    );

    let again = read_stream(resume(&app.browser, &id, "0").await).await;
    assert_eq!(
        again, whole,
        "a finished stream stays resumable from the start"
    );
}

#[tokio::test]
async fn a_stream_nobody_resumes_within_the_grace_is_stopped() {
    let app = resumable(&[("STREAM_RESUME_GRACE_SECS", "1")]).await;
    app.emulator.script("POST", "/chat-messages", hanging());
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let (_, response) = read_at_least(response, 1).await;
    drop(response);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        app.emulator
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/stop")),
        "not yet"
    );
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(3))
        .await;
    assert!(stop.is_some(), "Dify's stop follows the grace");
}

#[tokio::test]
async fn a_stream_stopped_after_the_grace_stays_resumable_up_to_where_it_was_left() {
    let app = resumable(&[("STREAM_RESUME_GRACE_SECS", "1")]).await;
    app.emulator.script("POST", "/chat-messages", hanging());
    let relayed = hanging()
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Send(bytes) => Some(bytes.clone()),
            _ => None,
        })
        .unwrap();
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let (_, response) = read_at_least(response, relayed.len()).await;
    drop(response);
    app.emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(5))
        .await
        .expect("Dify's stop follows the grace");

    let resumed = resume(&app.browser, &id, "0").await;
    assert_eq!(resumed.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), resumed.bytes())
        .await
        .expect("a stopped stream's resume ends")
        .unwrap();
    assert_eq!(body[..], relayed[..]);
}

#[tokio::test]
async fn a_resume_takes_no_slot_and_is_not_rate_limited() {
    let app = resumable(&[
        ("MAX_STREAMS_PER_IDENTITY", "1"),
        ("RATE_LIMIT_PER_MINUTE", "1"),
    ])
    .await;
    app.emulator.script("POST", "/chat-messages", hanging());
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let (head, response) = read_at_least(response, 1).await;

    app.browser
        .chat(&blocking("another"))
        .await
        .assert_error(429, "rate_limited");
    let mut follower = resume(&app.browser, &id, "0").await;
    assert_eq!(follower.status(), 200);
    let first = follower.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], &head[..first.len()]);
    drop(response);
}

#[tokio::test]
async fn bad_resume_requests_are_refused_without_bytes() {
    let app = resumable(&[("STREAM_RESUME_MAX_BYTES", "100")]).await;
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let id = stream_id(&response);
    let whole = read_stream(response).await;
    assert!(whole.len() > 100);

    for bad_id in [
        "nope",
        "..%2F..%2Fetc",
        &id.to_uppercase(),
        &format!("{id}0"),
        "00000000000000000000000000000000",
    ] {
        let res = TestResponse::read(resume(&app.browser, bad_id, "0").await).await;
        res.assert_error(404, "not_found");
    }
    let stranger = app.new_browser();
    TestResponse::read(resume(&stranger, &id, &whole.len().to_string()).await)
        .await
        .assert_error(404, "not_found");

    let past_end = (whole.len() + 1).to_string();
    for offset in [
        "-1",
        "abc",
        "1e3",
        "",
        "99999999999999999999999",
        "18446744073709551615",
        &past_end,
    ] {
        let res = TestResponse::read(resume(&app.browser, &id, offset).await).await;
        res.assert_error(400, "invalid_param");
    }
    TestResponse::read(resume(&app.browser, &id, "0").await)
        .await
        .assert_error(410, "stream_expired");
    let end = TestResponse::read(resume(&app.browser, &id, &whole.len().to_string()).await).await;
    assert_eq!(
        (end.status.as_u16(), end.body.len()),
        (200, 0),
        "nothing left to send"
    );
}

#[tokio::test]
async fn without_resuming_a_stream_carries_no_id() {
    let app = TestApp::spawn().await;
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    assert!(response.headers().get("x-stream-id").is_none());
}

#[tokio::test]
async fn over_the_budget_chats_get_429_until_utc_midnight_and_usage_says_so() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1")])).await;
    let before = usage(&app.browser).await;
    assert_eq!(before["tokens_used"], 0);
    assert_eq!(before["tokens_budget"], 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let resets_at = before["resets_at"].as_u64().unwrap();
    assert_eq!(resets_at % 86_400, 0, "a UTC midnight");
    assert!(resets_at > now && resets_at <= now + 86_400);

    let body = read_stream(app.browser.chat_stream(&json!({"query": "spend"})).await).await;
    let spent = sse_events(&body)
        .iter()
        .find(|e| e["event"] == "message_end")
        .and_then(|e| e["metadata"]["usage"]["total_tokens"].as_u64())
        .unwrap();
    eventually(
        "the stream's tokens are counted",
        Duration::from_secs(2),
        async || usage(&app.browser).await["tokens_used"] == spent,
    )
    .await;

    let refused = app.browser.chat(&blocking("more")).await;
    refused.assert_error(429, "budget_exceeded");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry.abs_diff(resets_at - now) <= 2,
        "{retry} s to midnight"
    );
    assert_eq!(app.upstream_requests("/v1/chat-messages").len(), 1);
    assert_eq!(
        usage(&app.new_browser()).await["tokens_used"],
        0,
        "per identity"
    );
}

#[tokio::test]
async fn blocking_answers_count_against_the_budget_once() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    let answer = app.browser.chat_blocking("spend", "").await;
    let spent = answer["metadata"]["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    eventually(
        "the answer's tokens are counted",
        Duration::from_secs(2),
        async || usage(&app.browser).await["tokens_used"] == spent,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], spent, "once");
}

/// An emulator whose slow answers (`SLOW` in the query) take 30 × 20 ms.
fn slow_answers() -> EmulatorOptions {
    EmulatorOptions {
        slow_interval: Duration::from_millis(20),
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn a_blocking_chat_counts_against_the_budget_when_the_browser_leaves_before_the_answer() {
    let app =
        TestApp::spawn_with(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")]), slow_answers()).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    leave_early(
        &app.browser,
        "/chat",
        &blocking("SLOW please"),
        Duration::from_millis(150),
    )
    .await;
    tokens_counted(&app.browser, 1).await;
}

#[tokio::test]
async fn a_streamed_chat_left_before_its_end_counts_what_dify_spent_until_it_stopped() {
    let app = TestApp::spawn_with(
        vars(&[
            ("TOKEN_BUDGET_PER_DAY", "1000000"),
            ("STREAM_RESUME_GRACE_SECS", "0"),
        ]),
        slow_answers(),
    )
    .await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    let response = app
        .browser
        .chat_stream(&json!({"query": "SLOW please"}))
        .await;
    let (head, response) = read_at_least(response, 1).await;
    assert!(!sse_events(&head).is_empty(), "the answer had begun");
    drop(response);
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(3))
        .await;
    assert!(stop.is_some(), "Dify is asked to stop");
    tokens_counted(&app.browser, 1).await;
}

#[tokio::test]
async fn a_streamed_chat_left_before_difys_first_byte_still_counts_what_dify_spent() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    assert_eq!(usage(&app.browser).await["tokens_used"], 0);
    app.emulator.script(
        "POST",
        "/chat-messages",
        late_answer(Duration::from_millis(600), 1234),
    );
    leave_early(
        &app.browser,
        "/chat",
        &json!({"query": "write me a novel"}),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(tokens_counted(&app.browser, 1234).await, 1234);
}

#[tokio::test]
async fn a_long_chat_left_before_difys_first_byte_is_stopped_at_its_first_event() {
    let app = TestApp::spawn().await;
    // The answer's headers and first event after 600 ms, its end 30 s later.
    let mut reply = late_answer(Duration::from_millis(600), 1234);
    reply.steps.insert(2, Step::Pause(Duration::from_secs(30)));
    app.emulator.script("POST", "/chat-messages", reply);
    leave_early(
        &app.browser,
        "/chat",
        &json!({"query": "write me a novel"}),
        Duration::from_millis(200),
    )
    .await;
    let stop = app
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(3))
        .await
        .expect("the answer is stopped once its first event names its task");
    assert!(stop.path.contains("7f1c2a3b-0000-4000-8000-00000000a001"));
}

#[tokio::test]
async fn a_blocking_chat_slower_than_the_request_deadline_is_504_and_still_counted() {
    let app = TestApp::spawn_with_env(vars(&[
        ("TOKEN_BUDGET_PER_DAY", "1000000"),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
    ]))
    .await;
    // Dify answers a blocking chat when the whole generation is done: here after 1.5 s.
    let mut reply = Reply::json(
        200,
        &json!({"event": "message", "task_id": "7f1c2a3b-0000-4000-8000-00000000a001",
                "id": "7f1c2a3b-0000-4000-8000-00000000d001",
                "message_id": "7f1c2a3b-0000-4000-8000-00000000d001",
                "conversation_id": "7f1c2a3b-0000-4000-8000-00000000c001", "mode": "chat",
                "answer": "A long answer.",
                "metadata": {"usage": {"prompt_tokens": 34, "completion_tokens": 1200, "total_tokens": 1234}},
                "created_at": 1_700_000_000}),
    );
    reply
        .steps
        .insert(0, Step::Pause(Duration::from_millis(1500)));
    app.emulator.script("POST", "/chat-messages", reply);
    app.browser
        .chat(&blocking("write me a novel"))
        .await
        .assert_error(504, "upstream_timeout");
    assert_eq!(tokens_counted(&app.browser, 1234).await, 1234);
}

#[tokio::test]
async fn a_generation_awaited_after_its_504_holds_no_call_slot() {
    let app = TestApp::spawn_with_env(vars(&[
        ("MAX_CONCURRENT_UPSTREAM_CALLS", "1"),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
    ]))
    .await;
    let mut reply = Reply::json(200, &json!({"answer": "late"}));
    reply.steps.insert(0, Step::Pause(Duration::from_secs(5)));
    app.emulator.script("POST", "/chat-messages", reply);
    app.browser
        .chat(&blocking("write me a novel"))
        .await
        .assert_error(504, "upstream_timeout");
    // Dify is still at it, and other calls go on meanwhile.
    assert_eq!(app.browser.get("/conversations").await.status, 200);
}

#[tokio::test]
async fn a_stream_whose_first_event_comes_after_the_request_deadline_is_504_and_still_counted() {
    let app = TestApp::spawn_with_env(vars(&[
        ("TOKEN_BUDGET_PER_DAY", "1000000"),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
    ]))
    .await;
    app.emulator.script(
        "POST",
        "/chat-messages",
        late_answer(Duration::from_millis(1500), 1234),
    );
    app.browser
        .chat(&json!({"query": "think long"}))
        .await
        .assert_error(504, "upstream_timeout");
    assert_eq!(tokens_counted(&app.browser, 1234).await, 1234);
}

#[tokio::test]
async fn a_blocking_answer_of_any_size_counts_its_tokens() {
    let app = TestApp::spawn_with_env(vars(&[("TOKEN_BUDGET_PER_DAY", "1000000")])).await;
    // ~300 KB: 25,000 emoji, 12 bytes each as Dify's json.dumps writes them.
    let long = "\u{1F600}".repeat(25_000);
    app.emulator.script(
        "POST",
        "/chat-messages",
        Reply::json(
            200,
            &json!({"event": "message", "task_id": "7f1c2a3b-0000-4000-8000-00000000a001",
                    "id": "7f1c2a3b-0000-4000-8000-00000000d001",
                    "message_id": "7f1c2a3b-0000-4000-8000-00000000d001",
                    "conversation_id": "7f1c2a3b-0000-4000-8000-00000000c001", "mode": "chat",
                    "answer": long,
                    "metadata": {"usage": {"prompt_tokens": 34, "completion_tokens": 50_000, "total_tokens": 50_034}},
                    "created_at": 1_700_000_000}),
        ),
    );
    let res = app.browser.chat(&blocking("25,000 emoji, please")).await;
    assert_eq!(res.status, 200);
    assert!(res.body.len() > 256 * 1024, "{}", res.body.len());
    assert_eq!(tokens_counted(&app.browser, 50_034).await, 50_034);
}

#[tokio::test]
async fn a_stream_ended_by_shutdown_counts_what_dify_spent_until_it_stopped() {
    let _serial = SERIAL.lock().await;
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut env = vars(&[
        ("TOKEN_BUDGET_PER_DAY", "1000000"),
        ("SHUTDOWN_GRACE_SECS", "1"),
    ]);
    env.push(("REDIS_URL", redis.url()));
    let mut a = TestApp::spawn_with(
        env,
        EmulatorOptions {
            slow_interval: Duration::from_millis(200),
            ..EmulatorOptions::default()
        },
    )
    .await;
    let b = replica(&redis, &[("TOKEN_BUDGET_PER_DAY", "1000000")]).await;
    let user_on_b = on(&b, &a.browser);
    let response = a
        .browser
        .chat_stream(&json!({"query": "SLOW please"}))
        .await;
    let (head, response) = read_at_least(response, 1).await;
    assert!(!sse_events(&head).is_empty(), "the answer had begun");
    let server = a.begin_shutdown();
    let rest = read_stream(response).await;
    assert!(String::from_utf8_lossy(&rest).contains("shutting_down"));
    let stop = a
        .emulator
        .wait_for_request(|r| r.path.ends_with("/stop"), Duration::from_secs(3))
        .await;
    assert!(stop.is_some(), "Dify is asked to stop");
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(tokens_counted(&user_on_b, 1).await > 0);
}

#[tokio::test]
async fn an_unreachable_redis_is_logged_without_its_password_and_refuses_no_one() {
    let _serial = SERIAL.lock().await;
    let password = "hunter2-redis-password";
    let url = format!("redis://:{password}@127.0.0.1:1/0");
    let app =
        TestApp::spawn_with_env(vars(&[("REDIS_URL", &url), ("RATE_LIMIT_PER_MINUTE", "5")])).await;
    assert_eq!(app.browser.chat(&blocking("hi")).await.status, 200);
    assert_eq!(usage(&app.browser).await["tokens_budget"], 0);
    eventually("the outage is logged", Duration::from_secs(3), async || {
        logs::captured().contains("Redis unreachable")
    })
    .await;
    assert!(
        !logs::captured().contains(password),
        "the Redis password was logged"
    );
    assert_eq!(metric(&app, "difybff_redis_up").await.as_deref(), Some("0"));
}

#[tokio::test]
async fn during_the_grace_the_stream_keeps_its_slot_and_stop_still_stops_at_once() {
    let app = resumable(&[("MAX_STREAMS_PER_IDENTITY", "1")]).await;
    app.emulator.script("POST", "/chat-messages", hanging());
    let response = app.browser.chat_stream(&json!({"query": "hello"})).await;
    let (head, response) = read_at_least(response, 1).await;
    let task_id = sse_events(&head)[0]["task_id"].as_str().unwrap().to_owned();
    drop(response);
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.browser
        .chat(&blocking("meanwhile"))
        .await
        .assert_error(429, "rate_limited");
    assert!(
        app.emulator
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/stop"))
    );
    let stopped = app
        .browser
        .post_json(&format!("/chat/{task_id}/stop"), &json!({}))
        .await;
    assert_eq!(stopped.status, 200);
    let path = format!("/v1/chat-messages/{task_id}/stop");
    assert_eq!(
        app.upstream_requests(&path).len(),
        1,
        "Dify's stop, at once"
    );
}
