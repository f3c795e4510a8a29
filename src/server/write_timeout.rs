//! A connection that fails its writes when the client stops taking bytes for too long. Without
//! it, a client that opens a stream and never reads would hold the stream (its permit, its
//! upstream connection, Dify's worker) for ever: hyper has no write timeout, and the relay's idle
//! timer only runs while the relay is polled.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pin_project! {
    pub struct WriteStallTimeout<T> {
        #[pin]
        inner: T,
        limit: Duration,
        // Created on the first stalled write only.
        timer: Option<Pin<Box<Sleep>>>,
        stalled: bool,
    }
}

impl<T> WriteStallTimeout<T> {
    pub fn new(inner: T, limit: Duration) -> WriteStallTimeout<T> {
        WriteStallTimeout {
            inner,
            limit,
            timer: None,
            stalled: false,
        }
    }
}

/// Starts the stall timer on the first `Pending` of a write and reports whether it has fired.
fn stall_expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    stalled: &mut bool,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    if !*stalled {
        *stalled = true;
        let deadline = Instant::now() + limit;
        match timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }
    timer
        .as_mut()
        .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client took no bytes for too long",
    )
}

macro_rules! guarded {
    ($this:ident, $cx:ident, $call:expr) => {
        match $call {
            Poll::Ready(result) => {
                *$this.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if stall_expired($this.timer, $this.stalled, *$this.limit, $cx) {
                    Poll::Ready(Err(timed_out()))
                } else {
                    Poll::Pending
                }
            }
        }
    };
}

impl<T: AsyncWrite> AsyncWrite for WriteStallTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        guarded!(this, cx, this.inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        guarded!(this, cx, this.inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        guarded!(this, cx, this.inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        guarded!(this, cx, this.inner.poll_shutdown(cx))
    }
}

impl<T: AsyncRead> AsyncRead for WriteStallTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_reading_fails_the_writer_after_the_limit() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = WriteStallTimeout::new(server, Duration::from_secs(3));
        let started = Instant::now();
        let result = server.write_all(&[b'x'; 1024]).await;
        assert_eq!(result.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (mut client, server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return all.len(),
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        let mut server = WriteStallTimeout::new(server, Duration::from_secs(3));
        assert!(server.write_all(&[b'x'; 640]).await.is_ok());
        assert!(server.shutdown().await.is_ok());
        drop(server);
        assert_eq!(reader.await.ok(), Some(640));
    }
}
