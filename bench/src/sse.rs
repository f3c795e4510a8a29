//! The SSE load client: opens streams (one fresh HTTP/1.1 connection each), reads Dify's events,
//! and measures time to first event and per-event delay (receive time minus the `"t"` stamp the
//! upstream put in the event just before sending it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::unix_nanos;

#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Debug)]
pub struct Load {
    /// Concurrent streams.
    pub streams: usize,
    /// Streams each concurrent slot runs one after the other.
    pub repeat: usize,
    /// Message events per stream (plus the closing `message_end`).
    pub events: u64,
    pub interval: Duration,
    pub answer_bytes: usize,
    /// Stream starts are spread evenly over this.
    pub ramp: Duration,
}

impl Load {
    fn body(&self) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "query": "benchmark",
                "inputs": {
                    "events": self.events,
                    "interval_us": self.interval.as_micros() as u64,
                    "answer_bytes": self.answer_bytes,
                },
                "response_mode": "streaming",
                "conversation_id": "",
                "user": "bench-user",
            })
            .to_string(),
        )
    }
}

/// Live counters, readable while the load runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub open: AtomicUsize,
    pub started: AtomicUsize,
    pub completed: AtomicUsize,
    pub errors: AtomicUsize,
    pub events: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ttfe: Vec<u64>,
    pub delays: Vec<u64>,
    /// The upstream's send stamp (unix nanos) of each of `delays`, in the same order.
    pub stamps: Vec<u64>,
    pub errors: Vec<String>,
    pub completed: usize,
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

#[derive(Default)]
struct StreamStats {
    ttfe: u64,
    delays: Vec<u64>,
    stamps: Vec<u64>,
    events: u64,
    bytes: u64,
}

pub async fn run(target: Arc<Target>, load: Load, progress: Arc<Progress>) -> Outcome {
    let body = load.body();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.streams);
    for slot in 0..load.streams {
        let target = target.clone();
        let body = body.clone();
        let progress = progress.clone();
        let load = load.clone();
        let offset = if load.streams > 1 {
            load.ramp.mul_f64(slot as f64 / load.streams as f64)
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((started + offset).into()).await;
            let mut results = Vec::with_capacity(load.repeat);
            for _ in 0..load.repeat {
                progress.started.fetch_add(1, Ordering::Relaxed);
                let result = one_stream(&target, body.clone(), load.events, &progress).await;
                match &result {
                    Ok(_) => progress.completed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => progress.errors.fetch_add(1, Ordering::Relaxed),
                };
                results.push(result);
            }
            results
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(stats) => {
                            outcome.completed += 1;
                            outcome.ttfe.push(stats.ttfe);
                            outcome.delays.extend(stats.delays);
                            outcome.stamps.extend(stats.stamps);
                            outcome.events += stats.events;
                            outcome.bytes += stats.bytes;
                        }
                        Err(e) => outcome.errors.push(e),
                    }
                }
            }
            Err(e) => outcome.errors.push(format!("task failed: {e}")),
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// Decrements `open` however the stream ends.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn one_stream(
    target: &Target,
    body: Bytes,
    events: u64,
    progress: &Progress,
) -> Result<StreamStats, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let mut request = Request::post(target.path.as_str())
        .header(hyper::header::HOST, "127.0.0.1")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    for (name, value) in &target.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    progress.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&progress.open);
    let status = response.status();
    let mut body = response.into_body();
    if status != hyper::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        conn.abort();
        return Err(format!("status {status}: {}", truncate(&text, 200)));
    }
    let mut stats = StreamStats {
        delays: Vec::with_capacity(events as usize + 1),
        stamps: Vec::with_capacity(events as usize + 1),
        ..StreamStats::default()
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut ended = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body after {} events: {e}", stats.events))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = unix_nanos();
        stats.bytes += data.len() as u64;
        progress
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        pending.extend_from_slice(&data);
        let mut consumed = 0;
        while let Some(end) = find(&pending[consumed..], b"\n\n") {
            let event = &pending[consumed..consumed + end];
            consumed += end + 2;
            let Some(name) = event_name(event) else {
                continue; // ping or comment
            };
            if stats.events == 0 {
                stats.ttfe = sent.elapsed().as_nanos() as u64;
            }
            stats.events += 1;
            progress.events.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = stamp(event) {
                stats.delays.push(now.saturating_sub(t));
                stats.stamps.push(t);
            }
            match name {
                b"message_end" => ended = true,
                b"error" => {
                    conn.abort();
                    return Err(format!(
                        "error event: {}",
                        truncate(&String::from_utf8_lossy(event), 200)
                    ));
                }
                _ => {}
            }
        }
        pending.drain(..consumed);
    }
    conn.abort();
    if !ended {
        return Err(format!(
            "ended after {} events, no message_end",
            stats.events
        ));
    }
    if stats.events != events + 1 {
        return Err(format!("{} events, expected {}", stats.events, events + 1));
    }
    Ok(stats)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `event` field of Dify's data JSON (`"event": "message"`), if the event has data.
fn event_name(event: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"event\": \"";
    let start = find(event, KEY)? + KEY.len();
    let len = event[start..].iter().position(|&b| b == b'"')?;
    Some(&event[start..start + len])
}

/// The upstream's send time, `"t": <unix nanos>`.
fn stamp(event: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t\": ";
    let start = find(event, KEY)? + KEY.len();
    let digits = event[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_event_names_and_stamps() {
        let e = b"data: {\"event\": \"message\", \"answer\": \"x\", \"t\": 1700000000123456789}";
        assert_eq!(event_name(e), Some(&b"message"[..]));
        assert_eq!(stamp(e), Some(1_700_000_000_123_456_789));
        assert_eq!(event_name(b"event: ping"), None);
    }
}
