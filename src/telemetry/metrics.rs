//! Prometheus metrics through the `metrics` facade. The recorder is process-wide and installed
//! once; every server in the process (tests start many) renders the same registry.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::Method;
use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::dify::watcher::Usage;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the recorder (first call only) and returns the handle that renders it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// Counts a request and records its latency. The two handles are looked up once per method,
/// route and status (the facade's macros build and look up a new labelled key on every call),
/// and methods outside HTTP's own share one label, so a client cannot grow the series.
pub fn request(method: &Method, route: &str, status: u16, elapsed: Duration) {
    type ByRoute = HashMap<String, HashMap<(&'static str, u16), (Counter, Histogram)>>;
    static HANDLES: OnceLock<Mutex<ByRoute>> = OnceLock::new();
    let method = method_label(method);
    let mut routes = HANDLES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !routes.contains_key(route) {
        routes.insert(route.to_owned(), HashMap::new());
    }
    let Some(by_status) = routes.get_mut(route) else {
        return;
    };
    let (count, latency) = by_status
        .entry((method, status))
        .or_insert_with(|| request_handles(method, route, status));
    count.increment(1);
    latency.record(elapsed.as_secs_f64());
}

fn request_handles(method: &'static str, route: &str, status: u16) -> (Counter, Histogram) {
    handle();
    let count = counter!(
        "difybff_http_requests_total",
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.to_string()
    );
    let latency = histogram!(
        "difybff_http_request_duration_seconds",
        "method" => method,
        "route" => route.to_owned()
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

pub fn time_to_first_byte(elapsed: Duration) {
    histogram!("difybff_stream_first_byte_seconds").record(elapsed.as_secs_f64());
}

pub fn stream_opened() {
    gauge!("difybff_open_streams").increment(1.0);
    counter!("difybff_streams_total").increment(1);
}

pub fn stream_closed() {
    gauge!("difybff_open_streams").decrement(1.0);
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
    counter!("difybff_tokens_total", "kind" => "prompt").increment(usage.prompt_tokens);
    counter!("difybff_tokens_total", "kind" => "completion").increment(usage.completion_tokens);
    if let (Some(price), Some(currency)) = (&usage.total_price, &usage.currency)
        && let Ok(price) = price.parse::<f64>()
    {
        counter!("difybff_cost_micros_total", "currency" => currency.clone())
            .increment((price * 1_000_000.0).round() as u64);
    }
}

/// Whether the shared Redis answers (only set when `REDIS_URL` is).
pub fn redis_up(up: bool) {
    gauge!("difybff_redis_up").set(if up { 1.0 } else { 0.0 });
}
