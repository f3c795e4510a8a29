//! A generation's upstream call goes on when its client leaves or the request deadline passes:
//! Dify goes on generating regardless, and what the answer spends is counted only once it is
//! read (its relay or answer, dropped unread, counts it). The call is polled in place while
//! someone waits for it, and moved to a task of its own only when no one does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::dify::client::GENERATION_LIMIT;
use crate::error::ApiError;

/// The call's result, awaited until `timeout` (the request deadline): then 504, the call going
/// on in a task.
pub(crate) async fn answered_in_time<F>(timeout: Duration, call: F) -> Result<F::Output, ApiError>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let call = Detachable(Some(Box::pin(call)));
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ApiError::UpstreamTimeout)
}

/// A future that, dropped before its end, is finished by a task (for at most
/// [`GENERATION_LIMIT`]; its output then dropped).
struct Detachable<F: Future + Send + 'static>(Option<Pin<Box<F>>>)
where
    F::Output: Send;

impl<F: Future + Send + 'static> Future for Detachable<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(call) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(call.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detachable<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let (Some(call), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(tokio::time::timeout(GENERATION_LIMIT, call));
        }
    }
}
