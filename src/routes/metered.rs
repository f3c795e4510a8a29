//! A generation's stream that counts its tokens against the caller's budget when it ends
//! (API.md §7): `message_end`'s usage, or a workflow run's `total_tokens`, once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::Stream;

use crate::dify::relay::RelayStream;
use crate::state::shared::{Shared, count_usage};

/// The relay, unchanged, counting the answer's tokens when it ends (however it ends).
pub(crate) struct Metered {
    relay: RelayStream,
    /// Where the tokens are counted, and for whom.
    usage: Option<(Arc<Shared>, Arc<str>)>,
}

impl Metered {
    pub(crate) fn new(relay: RelayStream, shared: &Arc<Shared>, identity: Arc<str>) -> Metered {
        Metered {
            relay,
            usage: Some((Arc::clone(shared), identity)),
        }
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.get_mut().relay).poll_next(cx)
    }
}

/// Counts the tokens now, or, for an answer left before its end, once the relay has read the
/// rest (Dify still spends them).
impl Drop for Metered {
    fn drop(&mut self) {
        let Some((shared, identity)) = self.usage.take() else {
            return;
        };
        match self.relay.total_tokens() {
            Some(tokens) => count_usage(shared, identity, tokens),
            None => self.relay.count_after_abandon(Box::new(move |tokens| {
                count_usage(shared, identity, tokens)
            })),
        }
    }
}
