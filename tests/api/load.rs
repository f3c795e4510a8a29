//! Load check (ignored by default): 1,000 streams at once through the proxy, each from its own
//! browser identity, each with a different answer cut into pieces at random places (inside
//! UTF-8 characters too). Every stream's bytes must hash the same as what the emulator sent.
//!
//! Run it with:
//!
//! ```text
//! cargo test --release --test api load:: -- --ignored --nocapture
//! ```
//!
//! `LOAD_STREAMS` overrides the number of streams (default 1000). It prints wall time, errors,
//! peak concurrent upstream streams, bytes relayed and time-to-first-byte percentiles.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{TestApp, Vars, assert_no_secret};
use bytes::Bytes;
use dify_emulator::{Reply, Step};
use sha2::{Digest, Sha256};

const DEFAULT_STREAMS: usize = 1000;
/// Pieces per answer and the pause between them: each stream stays open about a second, so
/// all of them overlap.
const PIECES: usize = 20;
const GAP: Duration = Duration::from_millis(50);

fn streams() -> usize {
    std::env::var("LOAD_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_STREAMS)
}

/// A complete answer unique to stream `n`, with raw UTF-8, as Dify ≥ 1.8.1 sends it.
fn answer_body(n: usize) -> Vec<u8> {
    let task = format!("{n:08x}-0000-4000-8000-{n:012x}");
    let mut body = String::new();
    for i in 0..PIECES {
        body.push_str(&format!(
            "data: {{\"event\":\"message\",\"conversation_id\":\"\",\"message_id\":\"{task}\",\"task_id\":\"{task}\",\"answer\":\"stream {n} piece {i}: Dify 是一个平台 🚀 — ünïcödé {}\"}}\n\n",
            "x".repeat((n * 7 + i * 13) % 40)
        ));
        if i % 5 == 4 {
            body.push_str("event: ping\n\n");
        }
    }
    body.push_str(&format!(
        "data: {{\"event\":\"message_end\",\"task_id\":\"{task}\",\"message_id\":\"{task}\",\"metadata\":{{\"usage\":{{\"total_tokens\":{n}}}}}}}\n\n"
    ));
    body.into_bytes()
}

/// The body cut at `PIECES` random places, one send per piece, `GAP` apart.
fn reply_for(body: &[u8]) -> Reply {
    let mut cuts: Vec<usize> = (0..PIECES)
        .map(|_| rand::random_range(1..body.len()))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut steps = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        if !steps.is_empty() {
            steps.push(Step::Pause(GAP));
        }
        steps.push(Step::Send(Bytes::copy_from_slice(&body[start..cut])));
        start = cut;
    }
    Reply {
        steps,
        ..Reply::sse(Vec::new())
    }
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

struct Outcome {
    hash: [u8; 32],
    bytes: usize,
    first_byte: Duration,
}

async fn one_stream(client: reqwest::Client, url: String) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut response = client
        .post(url)
        .json(&serde_json::json!({"query": "load"}))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if response.status() != 200 {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    let mut all = Vec::new();
    let mut first_byte = None;
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("read: {e}"))? {
        first_byte.get_or_insert_with(|| started.elapsed());
        all.extend_from_slice(&chunk);
    }
    assert_no_secret("a stream", &all);
    Ok(Outcome {
        hash: hash(&all),
        bytes: all.len(),
        first_byte: first_byte.unwrap_or_default(),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "load check: cargo test --release --test api load:: -- --ignored --nocapture"]
async fn a_thousand_concurrent_streams_arrive_byte_for_byte() {
    let n = streams();
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    // Four sockets per stream in this one process: browser, proxy in, proxy out, emulator.
    assert!(
        files >= (n as u64) * 4 + 256,
        "the open-file limit ({files}) is too low for {n} streams"
    );
    let vars: Vars = vec![
        ("MAX_CONCURRENT_STREAMS", (n * 2).to_string()),
        ("UPSTREAM_TIMEOUT_SECS", "60".into()),
    ];
    let app = TestApp::spawn_with_env(vars).await;

    let mut expected: HashMap<[u8; 32], usize> = HashMap::new();
    let mut expected_bytes = 0;
    for i in 0..n {
        let body = answer_body(i);
        expected_bytes += body.len();
        *expected.entry(hash(&body)).or_default() += 1;
        app.emulator
            .script("POST", "/chat-messages", reply_for(&body));
    }

    // No cookie jar: every request is a new browser, so per-identity limits do not apply.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let started = Instant::now();
    let url = app.browser.url("/chat");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn(one_stream(client.clone(), url.clone()));
    }
    let mut outcomes = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let mut peak = 0;
    let mut sample = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(outcome))) => outcomes.push(outcome),
                Some(Ok(Err(e))) => errors.push(e),
                Some(Err(e)) => errors.push(format!("task: {e}")),
            },
            _ = sample.tick() => peak = peak.max(app.emulator.open_streams()),
        }
    }
    let wall = started.elapsed();

    let mut received: HashMap<[u8; 32], usize> = HashMap::new();
    for outcome in &outcomes {
        *received.entry(outcome.hash).or_default() += 1;
    }
    let matching = outcomes
        .iter()
        .filter(|o| expected.contains_key(&o.hash))
        .count();
    let relayed: usize = outcomes.iter().map(|o| o.bytes).sum();
    let mut first_bytes: Vec<Duration> = outcomes.iter().map(|o| o.first_byte).collect();
    first_bytes.sort_unstable();

    println!("load check: {n} concurrent streams through the proxy");
    println!("  wall time            {:.2} s", wall.as_secs_f64());
    println!("  errors               {}", errors.len());
    println!("  streams complete     {}", outcomes.len());
    println!("  byte-for-byte equal  {matching}");
    println!("  peak upstream open   {peak}");
    println!(
        "  bytes relayed        {relayed} (expected {expected_bytes}), {:.1} MB/s",
        relayed as f64 / wall.as_secs_f64() / 1e6
    );
    println!(
        "  first byte p50/p99   {:?} / {:?} (max {:?})",
        percentile(&first_bytes, 0.5),
        percentile(&first_bytes, 0.99),
        first_bytes.last().copied().unwrap_or_default()
    );
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }

    assert!(errors.is_empty(), "{} streams failed", errors.len());
    assert_eq!(
        received, expected,
        "every stream's bytes equal what Dify sent"
    );
    assert_eq!(
        app.upstream_requests("/v1/chat-messages").len(),
        n,
        "one upstream call per stream"
    );
}
