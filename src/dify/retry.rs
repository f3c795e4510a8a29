//! When an idempotent `GET` to Dify is tried again: after a failed connect or a 502/503, at
//! most [`MAX_GET_RETRIES`] times, with jittered backoff, never past the call's deadline.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;

use super::client::map_transport;
use super::transport::TransportError;
use crate::error::ApiError;

/// Retries after the first try (so 3 tries at most).
pub const MAX_GET_RETRIES: u32 = 2;
/// The first retry waits 50–100 ms, the second 100–200 ms.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// A failed exchange and whether trying again could help.
pub struct Failure {
    pub error: ApiError,
    retryable: bool,
}

impl Failure {
    pub fn final_(error: ApiError) -> Failure {
        Failure {
            error,
            retryable: false,
        }
    }

    /// Only a failed connect (refused, DNS, TLS, connect timeout) is retryable: the request
    /// never reached Dify.
    pub fn transport(e: TransportError) -> Failure {
        Failure {
            retryable: e.is_connect(),
            error: map_transport(e),
        }
    }

    /// A non-2xx answer: retryable when it came from a gateway in front of a Dify that is down.
    pub fn status(error: ApiError, status: StatusCode) -> Failure {
        Failure {
            error,
            retryable: matches!(
                status,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
            ),
        }
    }
}

/// The pause before retry number `retries + 1`, or `None` when the failure is final.
pub fn pause_before(failure: &Failure, retries: u32, deadline: Instant) -> Option<Duration> {
    let pause = backoff(retries);
    (failure.retryable && retries < MAX_GET_RETRIES && Instant::now() + pause < deadline)
        .then_some(pause)
}

/// "Equal jitter": half the exponential step fixed, half random, so retries from many
/// requests failing together spread out.
fn backoff(retry: u32) -> Duration {
    let step = BACKOFF_BASE.saturating_mul(1 << retry.min(8));
    let half = step / 2;
    let jitter = rand::random_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dify::transport::{Outbound, Transport};
    use axum::http::Method;
    use reqwest::Url;

    #[test]
    fn backoff_grows_and_stays_within_its_jitter_band() {
        for _ in 0..200 {
            let first = backoff(0);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let second = backoff(1);
            assert!((100..=200).contains(&second.as_millis()), "{second:?}");
        }
        assert!(
            backoff(40) <= BACKOFF_BASE * 256,
            "large retry counts do not overflow"
        );
    }

    #[test]
    fn backoff_is_jittered() {
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(1)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn only_bad_gateway_and_unavailable_are_retried() {
        let later = Instant::now() + Duration::from_secs(60);
        let retried = |status: u16| {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let failure = Failure::status(ApiError::UpstreamTimeout, status);
            pause_before(&failure, 0, later).is_some()
        };
        assert!(retried(502) && retried(503));
        for status in [400, 401, 404, 429, 500, 504] {
            assert!(!retried(status), "{status}");
        }
    }

    #[test]
    fn no_retry_past_the_limit_or_the_deadline() {
        let failure = Failure::status(ApiError::UpstreamTimeout, StatusCode::BAD_GATEWAY);
        let later = Instant::now() + Duration::from_secs(60);
        assert!(pause_before(&failure, MAX_GET_RETRIES, later).is_none());
        assert!(pause_before(&failure, 0, Instant::now()).is_none());
    }

    /// A `GET` of `url` through the transport (hyper's client for `http://`).
    async fn get(url: &str) -> Option<TransportError> {
        let url = Url::parse(url).ok()?;
        let transport = Transport::new(&url, 1, Duration::from_secs(5)).ok()?;
        let call = Outbound::new(Method::GET, url, transport.headers().clone());
        transport.send(call).await.err()
    }

    #[tokio::test]
    async fn a_refused_connect_is_retryable_and_a_broken_exchange_is_not() {
        let later = Instant::now() + Duration::from_secs(60);
        for refused_at in ["http://127.0.0.1:1/", "https://127.0.0.1:1/"] {
            let refused = get(refused_at).await.map(Failure::transport);
            assert!(
                refused
                    .as_ref()
                    .is_some_and(|f| pause_before(f, 0, later).is_some()),
                "{refused_at}"
            );
            assert!(matches!(
                refused.map(|f| f.error),
                Some(ApiError::UpstreamUnavailable(cause)) if cause.contains("refused")
            ));
        }

        // A server that accepts and hangs up: the request may have reached it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else { return };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let broken = get(&format!("http://{addr}/")).await;
        assert!(
            broken
                .map(Failure::transport)
                .is_some_and(|f| pause_before(&f, 0, later).is_none())
        );
    }
}
