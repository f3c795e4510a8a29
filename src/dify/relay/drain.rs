//! The rest of an answer whose client left before its end, read in a task of its own so that
//! what Dify spent on it is counted (API.md §7): asked to stop, Dify ends the answer within
//! about a second with a normal `message_end` carrying the usage so far (dify-protocol.md
//! §5.7). A client may leave before the first event that names the task to stop (a chatflow's
//! comes once a worker takes the run, after pings): it is waited for as the relay would, each
//! read within the idle timeout. The connection is closed when the end does not come in time.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use tokio::time::Instant;

use super::{StopOnAbandon, StreamGuard, stop_call};
use crate::dify::answer::TokenSink;
use crate::dify::client::GENERATION_LIMIT;
use crate::dify::watcher::SseWatcher;
use crate::telemetry::metrics;

/// How long the rest of a stopped answer is read: Dify's stop takes about a second.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// Dify's body from where the client left it, and what the relay had seen of it.
pub(super) struct Rest {
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ()>> + Send>>,
    pub watcher: SseWatcher,
    /// The most the body may stay silent (the relay's idle timeout).
    pub idle: Duration,
}

/// Reads `rest` to its terminal event, asking Dify to stop (`stop`) once the task id is known,
/// then for at most [`DRAIN_LIMIT`]; before that (or when too many stops are pending), each
/// read within the idle timeout and all within [`GENERATION_LIMIT`]. Then tells `tokens` what it spent. The stream's slot is held
/// until then.
pub(super) async fn count_rest(
    mut rest: Rest,
    mut stop: Option<StopOnAbandon>,
    _guard: Option<StreamGuard>,
    tokens: TokenSink,
) {
    let mut limit = Instant::now() + GENERATION_LIMIT;
    let mut named = false;
    let mut stopped = false;
    while rest.watcher.terminal().is_none() {
        if !named && let Some(task_id) = rest.watcher.task_id() {
            named = true;
            // Without a stop slot Dify generates on, so its answer is read to its end.
            stopped = match stop.take() {
                Some(stop) => stop_call(stop, task_id).map(tokio::spawn).is_some(),
                None => true,
            };
            if stopped {
                limit = Instant::now() + DRAIN_LIMIT;
            }
        }
        let by = if stopped {
            limit
        } else {
            limit.min(Instant::now() + rest.idle)
        };
        match tokio::time::timeout_at(by, rest.body.next()).await {
            Ok(Some(Ok(chunk))) => rest.watcher.feed(&chunk),
            _ => break,
        }
    }
    if let Some(usage) = rest.watcher.usage() {
        metrics::token_usage(usage);
    }
    if let Some(spent) = rest.watcher.total_tokens() {
        tokens(spent);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures_util::stream;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::config::Config;
    use crate::dify::client::{Caller, DifyClient, StopKind};

    const FIRST: &[u8] =
        b"data: {\"event\": \"message\", \"task_id\": \"t-1\", \"answer\": \"Hi\"}\n\n";
    const END: &[u8] =
        b"data: {\"event\": \"message_end\", \"metadata\": {\"usage\": {\"total_tokens\": 42}}}\n\n";

    fn no_stop_slot() -> StopOnAbandon {
        let vars = [
            ("DIFY_API_KEY", "app-test"),
            ("DIFY_BASE_URL", "http://127.0.0.1:9/v1"),
        ];
        let config = Config::from_lookup(
            |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            },
            false,
        )
        .unwrap();
        StopOnAbandon {
            client: Arc::new(DifyClient::new(&config, &config.apps.apps[0]).unwrap()),
            caller: Caller {
                user: "u-1".into(),
                trace_id: None,
            },
            stops: Arc::new(Semaphore::new(0)),
            kind: StopKind::Chat,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_cannot_be_stopped_is_read_to_its_end_and_counted() {
        let mut watcher = SseWatcher::new();
        watcher.feed(FIRST);
        let late_end = stream::once(async {
            tokio::time::sleep(DRAIN_LIMIT * 10).await;
            Ok(Bytes::from_static(END))
        });
        let rest = Rest {
            body: Box::pin(late_end),
            watcher,
            idle: Duration::from_secs(60),
        };
        let counted = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&counted);
        count_rest(
            rest,
            Some(no_stop_slot()),
            None,
            Box::new(move |tokens| *sink.lock().unwrap() = Some(tokens)),
        )
        .await;
        assert_eq!(*counted.lock().unwrap(), Some(42));
    }
}
