//! A request body that fails when the client stops sending: the gap between two pieces may not
//! exceed `REQUEST_BODY_TIMEOUT_SECS` (like nginx's `client_body_timeout`; only time spent
//! waiting on the client counts, not time the handler spends elsewhere between reads), and the
//! whole body must have arrived `REQUEST_BODY_DEADLINE_SECS` after the request head, however
//! steadily it trickles.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error a stalled body ends with; [`is_body_timeout`] finds it in an error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout;

impl std::fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client sent nothing of the request body for too long")
    }
}

impl std::error::Error for BodyReadTimeout {}

/// Whether this error, or one it was caused by, is a [`BodyReadTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<BodyReadTimeout>())
}

pin_project! {
    pub struct ReadTimeoutBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        deadline: Instant,
        // Created on the first wait only, so bodies that never wait (empty ones) cost nothing.
        timer: Option<Pin<Box<Sleep>>>,
        waiting: bool,
        timed_out: bool,
    }
}

impl<B> ReadTimeoutBody<B> {
    pub fn new(inner: B, idle: Duration, whole: Duration) -> ReadTimeoutBody<B> {
        ReadTimeoutBody {
            inner,
            idle,
            deadline: Instant::now() + whole,
            timer: None,
            waiting: false,
            timed_out: false,
        }
    }
}

impl<B> Body for ReadTimeoutBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                if Instant::now() >= *this.deadline {
                    *this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = (Instant::now() + *this.idle).min(*this.deadline);
                if !*this.waiting {
                    *this.waiting = true;
                    match this.timer.as_mut() {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => *this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                let fired = this
                    .timer
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if fired {
                    *this.timed_out = true;
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::{StreamExt, stream};
    use http_body_util::{BodyExt, StreamBody};

    type Chunks = Vec<Result<Frame<Bytes>, std::io::Error>>;

    const LONG: Duration = Duration::from_secs(3600);

    fn trickle(
        gap: Duration,
        pieces: usize,
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(stream::unfold(0, move |i| async move {
            if i == pieces {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                i + 1,
            ))
        }))
    }

    fn frames(parts: &[&'static str]) -> Chunks {
        parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_passes_whole() {
        let body = StreamBody::new(stream::iter(frames(&["ab", "cd"])));
        let body = ReadTimeoutBody::new(body, Duration::from_secs(1), LONG);
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"abcd"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_longer_than_the_gap_fails_with_body_read_timeout() {
        let slow = stream::iter(frames(&["ab"])).chain(stream::pending());
        let body = ReadTimeoutBody::new(StreamBody::new(slow), Duration::from_secs(5), LONG);
        let started = Instant::now();
        let err = body.collect().await.err();
        let err = err
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        assert!(err.is_some_and(is_body_timeout), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn gaps_shorter_than_the_limit_add_up_without_failing() {
        let gap = Duration::from_secs(4);
        let trickle = stream::unfold(0, move |i| async move {
            if i == 5 {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                i + 1,
            ))
        });
        let body = ReadTimeoutBody::new(StreamBody::new(trickle), Duration::from_secs(5), LONG);
        let bytes = body.collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(bytes.as_deref(), Some(&b"xxxxx"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_past_the_whole_deadline_fails_there() {
        let body = trickle(Duration::from_secs(2), 1000);
        let body = ReadTimeoutBody::new(body, Duration::from_secs(5), Duration::from_secs(60));
        let started = Instant::now();
        let err = body.collect().await.err();
        let err = err
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        assert!(err.is_some_and(is_body_timeout), "{err:?}");
        assert!(
            started.elapsed() <= Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_timeout_is_found_inside_wrapping_errors() {
        let wrapped = axum::Error::new(BodyReadTimeout);
        assert!(is_body_timeout(&wrapped));
        assert!(!is_body_timeout(&std::io::Error::other("reset")));
    }
}
