//! Prometheus metrics through the `metrics` facade. The recorder is process-wide and installed
//! once; every server in the process (tests start many) renders the same registry.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Once, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::dify::watcher::Usage;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// How often recorded latencies are folded into their histograms' buckets. Until then (or a
/// scrape) the exporter keeps every sample: a server nobody scrapes would keep them all.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder (first call only), with its upkeep thread, and returns the handle
/// that renders it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    let handle = HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref();
    static UPKEEP: Once = Once::new();
    if let Some(handle) = handle {
        UPKEEP.call_once(|| {
            let started = every("dify-bff-metrics", UPKEEP_EVERY, || handle.run_upkeep());
            if let Err(e) = started {
                tracing::warn!(error = %e, "no metrics upkeep thread; latency samples wait for a scrape");
            }
        });
    }
    handle
}

/// Runs `task` every `period` on a thread of its own, for the life of the process.
fn every(
    name: &str,
    period: Duration,
    mut task: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                task();
            }
        })
        .map(drop)
}

pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// Counts a request and records its latency. The two handles are looked up once per method,
/// route and status (the facade's macros build and look up a new labelled key on every call),
/// and methods outside HTTP's own share one label, so a client cannot grow the series. Known
/// handles are read under a shared lock; only a first sighting takes the exclusive one.
/// `app` is the request's app (one of the configured names, or empty for routes of no app).
pub fn request(method: &Method, route: &str, app: &str, status: u16, elapsed: Duration) {
    type ByStatus = HashMap<(&'static str, u16), (Counter, Histogram), Fnv>;
    type ByRoute = HashMap<String, HashMap<String, ByStatus, Fnv>, Fnv>;
    static HANDLES: OnceLock<RwLock<ByRoute>> = OnceLock::new();
    let method = method_label(method);
    let handles = HANDLES.get_or_init(RwLock::default);
    let record = |(count, latency): &(Counter, Histogram)| {
        count.increment(1);
        latency.record(elapsed.as_secs_f64());
    };
    {
        let known = handles.read().unwrap_or_else(PoisonError::into_inner);
        let found = known
            .get(route)
            .and_then(|by_app| by_app.get(app))
            .and_then(|by_status| by_status.get(&(method, status)));
        if let Some(found) = found {
            record(found);
            return;
        }
    }
    let mut handles = handles.write().unwrap_or_else(PoisonError::into_inner);
    let by_status = handles
        .entry(route.to_owned())
        .or_default()
        .entry(app.to_owned())
        .or_default();
    record(
        by_status
            .entry((method, status))
            .or_insert_with(|| request_handles(method, route, app, status)),
    );
}

/// FNV-1a, for the metric handles' keys: route templates, app names, methods, statuses and
/// Dify's currencies, a few dozen keys no client chooses, where SipHash's defence costs more
/// than the lookup.
struct Fnv1a(u64);

type Fnv = BuildHasherDefault<Fnv1a>;

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn request_handles(
    method: &'static str,
    route: &str,
    app: &str,
    status: u16,
) -> (Counter, Histogram) {
    handle();
    let count = counter!(
        "difybff_http_requests_total",
        "method" => method,
        "route" => route.to_owned(),
        "app" => app.to_owned(),
        "status" => status.to_string()
    );
    let latency = histogram!(
        "difybff_http_request_duration_seconds",
        "method" => method,
        "route" => route.to_owned(),
        "app" => app.to_owned()
    );
    (count, latency)
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// A handle looked up once: the facade's macros build and look up the key on every call.
macro_rules! once {
    ($kind:ty, $make:expr) => {{
        static HANDLE: OnceLock<$kind> = OnceLock::new();
        HANDLE.get_or_init(|| {
            handle();
            $make
        })
    }};
}

/// Handles per app (a handful, known at start-up) or per currency, looked up under a shared
/// lock.
struct PerApp<T>(OnceLock<RwLock<HashMap<String, T, Fnv>>>);

impl<T: Clone> PerApp<T> {
    const fn new() -> PerApp<T> {
        PerApp(OnceLock::new())
    }

    fn get(&self, app: &str, make: impl FnOnce(&str) -> T) -> T {
        let map = self.0.get_or_init(RwLock::default);
        if let Some(found) = map.read().unwrap_or_else(PoisonError::into_inner).get(app) {
            return found.clone();
        }
        handle();
        map.write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(app.to_owned())
            .or_insert_with(|| make(app))
            .clone()
    }
}

pub fn time_to_first_byte(elapsed: Duration) {
    once!(Histogram, histogram!("difybff_stream_first_byte_seconds")).record(elapsed.as_secs_f64());
}

/// An app's stream and upstream-call counters, kept by its client: looked up on first use
/// rather than on every call.
#[derive(Default)]
pub struct AppCounters {
    streams: OnceLock<Counter>,
    calls: OnceLock<Arc<[Counter; 6]>>,
}

impl AppCounters {
    /// A stream Dify started for `app`, on our routes or the gateway (its headers arrived).
    pub fn stream(&self, app: &str) {
        static STREAMS: PerApp<Counter> = PerApp::new();
        self.streams
            .get_or_init(|| {
                STREAMS.get(
                    app,
                    |app| counter!("difybff_app_streams_total", "app" => app.to_owned()),
                )
            })
            .increment(1);
    }

    /// One upstream exchange of `app`: `None` timed out, `Some(None)` failed to connect or
    /// send, else Dify's status class.
    pub fn upstream_call(&self, app: &str, sent: Option<Option<StatusCode>>) {
        const OUTCOMES: [&str; 6] = ["timeout", "error", "2xx", "3xx", "4xx", "5xx"];
        static CALLS: PerApp<Arc<[Counter; 6]>> = PerApp::new();
        let outcome = match sent {
            None => 0,
            Some(None) => 1,
            Some(Some(status)) => match status.as_u16() {
                200..=299 => 2,
                300..=399 => 3,
                400..=499 => 4,
                _ => 5,
            },
        };
        let counters = self.calls.get_or_init(|| {
            CALLS.get(app, |app| {
                Arc::new(OUTCOMES.map(|outcome| {
                    counter!("difybff_upstream_calls_total", "app" => app.to_owned(), "outcome" => outcome)
                }))
            })
        });
        counters[outcome].increment(1);
    }
}

fn open_streams() -> &'static Gauge {
    once!(Gauge, gauge!("difybff_open_streams"))
}

pub fn stream_opened() {
    open_streams().increment(1.0);
    once!(Counter, counter!("difybff_streams_total")).increment(1);
}

pub fn stream_closed() {
    open_streams().decrement(1.0);
}

/// Called for every relayed chunk: the counter is looked up once, not per call.
pub fn bytes_relayed(n: usize) {
    static BYTES: OnceLock<Counter> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            handle();
            counter!("difybff_stream_bytes_total")
        })
        .increment(n as u64);
}

pub fn stream_failed(reason: &'static str) {
    counter!("difybff_stream_failures_total", "reason" => reason).increment(1);
}

pub fn stop_on_disconnect() {
    counter!("difybff_stops_on_disconnect_total").increment(1);
}

pub fn rejected(code: &'static str) {
    counter!("difybff_rejected_total", "code" => code).increment(1);
}

pub fn token_usage(usage: &Usage) {
    once!(
        Counter,
        counter!("difybff_tokens_total", "kind" => "prompt")
    )
    .increment(usage.prompt_tokens);
    once!(
        Counter,
        counter!("difybff_tokens_total", "kind" => "completion")
    )
    .increment(usage.completion_tokens);
    if let (Some(price), Some(currency)) = (&usage.total_price, &usage.currency)
        && let Ok(price) = price.parse::<f64>()
    {
        static COST: PerApp<Counter> = PerApp::new();
        COST.get(
            currency_label(currency),
            |currency| counter!("difybff_cost_micros_total", "currency" => currency.to_owned()),
        )
        .increment((price * 1_000_000.0).round() as u64);
    }
}

/// Whether the shared Redis answers (only set when `REDIS_URL` is).
pub fn redis_up(up: bool) {
    gauge!("difybff_redis_up").set(if up { 1.0 } else { 0.0 });
}

/// A currency as a label: an ISO 4217 code, else `other` (whatever Dify sends adds no series).
fn currency_label(currency: &str) -> &str {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        currency
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn only_iso_currency_codes_become_labels() {
        assert_eq!(currency_label("USD"), "USD");
        assert_eq!(currency_label("RMB"), "RMB");
        for odd in ["usd", "US", "USDT", "x y", "", "ÅÅÅ"] {
            assert_eq!(currency_label(odd), "other", "{odd}");
        }
    }

    #[test]
    fn periodic_work_runs_again_and_again_on_its_own_thread() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let started = every("test-every", Duration::from_millis(5), move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        assert!(started.is_ok());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::Relaxed) < 3 {
            assert!(std::time::Instant::now() < deadline, "ran {runs:?} times");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
