//! Dify's answer body, from whichever client carried the call.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::TransportError;

pub enum UpstreamBody {
    Direct(Incoming),
    Reqwest(reqwest::Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        match self.get_mut() {
            UpstreamBody::Direct(body) => {
                Pin::new(body).poll_frame(cx).map_err(TransportError::from)
            }
            UpstreamBody::Reqwest(body) => {
                Pin::new(body).poll_frame(cx).map_err(TransportError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct(body) => body.is_end_stream(),
            UpstreamBody::Reqwest(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct(body) => body.size_hint(),
            UpstreamBody::Reqwest(body) => body.size_hint(),
        }
    }
}

/// The body's data as it arrives (trailers, which Dify does not send, are skipped).
impl Stream for UpstreamBody {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            return Poll::Ready(match ready!(self.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Some(Ok(data)),
                    Err(_) => continue,
                },
                Some(Err(e)) => Some(Err(e)),
                None => None,
            });
        }
    }
}

impl UpstreamBody {
    /// A body with nothing in it, to stand in for one taken away.
    pub fn empty() -> UpstreamBody {
        UpstreamBody::Reqwest(reqwest::Body::from(Bytes::new()))
    }

    /// The next chunk of data, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        futures_util::StreamExt::next(self).await.transpose()
    }
}
