//! A closed-loop HTTP/1.1 keep-alive load client for the JSON scenario, used when `oha` is not
//! installed: `connections` connections, each sending its next GET as soon as the previous
//! answer has been read whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::{Summary, summarize};

#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub path_and_query: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Summary,
    pub elapsed: Duration,
    pub bytes: u64,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(target: Arc<Target>, connections: usize, duration: Duration) -> Outcome {
    run_until(
        target,
        connections,
        Budget::Until(Instant::now() + duration),
    )
    .await
}

/// Exactly `requests` requests over `connections` connections (each takes the next one left).
pub async fn run_count(target: Arc<Target>, connections: usize, requests: u64) -> Outcome {
    let left = Arc::new(AtomicU64::new(requests));
    run_until(target, connections, Budget::Count(left)).await
}

/// When the load stops: at a deadline, or when a shared count of requests is used up.
#[derive(Clone)]
enum Budget {
    Until(Instant),
    Count(Arc<AtomicU64>),
}

impl Budget {
    fn left(&self) -> bool {
        match self {
            Budget::Until(deadline) => Instant::now() < *deadline,
            Budget::Count(left) => left.load(Ordering::Relaxed) > 0,
        }
    }

    /// Takes one request: one of the count, or (for a deadline) whether it has not passed.
    fn take(&self) -> bool {
        match self {
            Budget::Until(deadline) => Instant::now() < *deadline,
            Budget::Count(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn run_until(target: Arc<Target>, connections: usize, budget: Budget) -> Outcome {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let target = target.clone();
            let budget = budget.clone();
            tokio::spawn(async move { connection(&target, &budget).await })
        })
        .collect();
    let mut outcome = Outcome::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let Ok(one) = task.await else {
            outcome.errors += 1;
            continue;
        };
        outcome.requests += one.latencies.len() as u64;
        outcome.bytes += one.bytes;
        outcome.errors += one.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = one.first_error;
        }
        latencies.extend(one.latencies);
    }
    outcome.elapsed = started.elapsed();
    outcome.latency = summarize(latencies);
    outcome
}

#[derive(Default)]
struct Connection {
    latencies: Vec<u64>,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Connection {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

async fn connection(target: &Target, budget: &Budget) -> Connection {
    let mut c = Connection::default();
    while budget.left() {
        let tcp = match TcpStream::connect(target.addr).await {
            Ok(tcp) => tcp,
            Err(e) => {
                c.fail(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await
        else {
            c.fail("handshake".into());
            continue;
        };
        let conn = tokio::spawn(conn);
        while budget.take() {
            let mut request = Request::get(target.path_and_query.as_str())
                .header(hyper::header::HOST, "127.0.0.1")
                .body(Empty::new())
                .expect("a valid request");
            for (name, value) in &target.headers {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            let sent = Instant::now();
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    c.fail(format!("send: {e}"));
                    break;
                }
            };
            let status = response.status();
            match response.into_body().collect().await {
                Ok(body) if status.is_success() => {
                    c.latencies.push(sent.elapsed().as_nanos() as u64);
                    c.bytes += body.to_bytes().len() as u64;
                }
                Ok(_) => c.fail(format!("status {status}")),
                Err(e) => {
                    c.fail(format!("body: {e}"));
                    break;
                }
            }
        }
        conn.abort();
    }
    c
}
