//! The rest of an answer whose client left before its end, read in a task of its own so that
//! what Dify spent on it is counted (API.md §7): asked to stop, Dify ends the answer within
//! about a second with a normal `message_end` carrying the usage so far (dify-protocol.md
//! §5.7). The connection is closed when that does not come in time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use tokio::time::Instant;

use super::StreamGuard;
use crate::dify::answer::TokenSink;
use crate::dify::watcher::SseWatcher;
use crate::telemetry::metrics;

/// How long the rest of a left answer is read at most: Dify's stop, and a little more.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// Dify's body from where the client left it, and what the relay had seen of it.
pub(super) struct Rest {
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>,
    pub watcher: SseWatcher,
}

/// Reads `rest` to its terminal event, for at most [`DRAIN_LIMIT`], while `stop` asks Dify to
/// stop; then tells `tokens` what it spent. The stream's slot is held until then.
pub(super) async fn count_rest(
    mut rest: Rest,
    stop: Option<impl Future<Output = ()>>,
    _guard: Option<StreamGuard>,
    tokens: TokenSink,
) {
    let read = async {
        let limit = Instant::now() + DRAIN_LIMIT;
        while rest.watcher.terminal().is_none() {
            match tokio::time::timeout_at(limit, rest.body.next()).await {
                Ok(Some(Ok(chunk))) => rest.watcher.feed(&chunk),
                _ => break,
            }
        }
    };
    match stop {
        Some(stop) => {
            tokio::join!(stop, read);
        }
        None => read.await,
    }
    if let Some(usage) = rest.watcher.usage() {
        metrics::token_usage(usage);
    }
    if let Some(spent) = rest.watcher.total_tokens() {
        tokens(spent);
    }
}
