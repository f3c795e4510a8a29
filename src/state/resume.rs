//! Resumable streams (API.md §7). With resuming on, a streamed answer is driven by its own
//! task into a bounded per-stream buffer; the `POST /chat` body and any resume are followers
//! reading that buffer from a byte offset, chunk for chunk, the very `Bytes` Dify sent. When
//! no follower is left, the task waits `STREAM_RESUME_GRACE_SECS` for one before dropping the
//! relay (whose drop asks Dify to stop). The bytes stay for `STREAM_RESUME_SECS` after the end.
//! With Redis, the bytes are also mirrored there ([`super::resume_redis`]) so that any replica
//! can serve a resume.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::resume_redis::{Mirror, RemoteFollow};
use super::shared::Shared;
use crate::config::Config;
use crate::error::ApiError;

/// The body of a `POST /chat` stream or of a resume.
pub type Follow = BoxStream<'static, Result<Bytes, std::io::Error>>;

pub struct Resumable {
    enabled: bool,
    keep: Duration,
    max_bytes: usize,
    grace: Duration,
    idle: Duration,
    shared: Arc<Shared>,
    streams: Mutex<HashMap<String, Arc<Held>>>,
}

/// One stream's kept bytes and who follows it.
struct Held {
    identity: String,
    buf: Mutex<Buf>,
    /// Bumped on every append and at the end.
    changed: watch::Sender<()>,
    followers: AtomicUsize,
    followers_changed: Notify,
}

#[derive(Default)]
struct Buf {
    /// Each chunk with the offset of its first byte in the whole body.
    chunks: VecDeque<(u64, Bytes)>,
    /// Offset of the first byte kept.
    start: u64,
    /// Bytes relayed so far.
    end: u64,
    done: bool,
}

impl Buf {
    /// Keeps a copy: a chunk from the connection shares its whole read buffer, so keeping the
    /// chunk itself would hold kilobytes for each small event for as long as the stream is kept.
    fn append(&mut self, chunk: Bytes, max_bytes: usize) {
        let len = chunk.len() as u64;
        self.chunks
            .push_back((self.end, Bytes::copy_from_slice(&chunk)));
        self.end += len;
        while self.end - self.start > max_bytes as u64 && self.chunks.len() > 1 {
            if let Some((_, old)) = self.chunks.pop_front() {
                self.start += old.len() as u64;
            }
        }
    }

    /// The kept bytes from `pos`, as far as the chunk holding it goes.
    fn chunk_at(&self, pos: u64) -> Option<Bytes> {
        let i = self
            .chunks
            .partition_point(|(at, c)| at + c.len() as u64 <= pos);
        let (at, chunk) = self.chunks.get(i)?;
        let from = usize::try_from(pos.checked_sub(*at)?).ok()?;
        Some(chunk.slice(from..))
    }
}

/// Where a resume may start: the checks of API.md §7 on a stream's kept range.
pub fn check_offset(offset: u64, start: u64, end: u64) -> Result<(), ApiError> {
    if offset > end {
        return Err(ApiError::invalid("offset is past the end of the stream"));
    }
    if offset < start {
        return Err(ApiError::StreamExpired);
    }
    Ok(())
}

/// Stream ids are UUIDs in their 32-hex-digit form.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn not_found() -> ApiError {
    ApiError::NotFound("No such stream.".into())
}

impl Resumable {
    pub fn new(config: &Config, shared: &Arc<Shared>) -> Arc<Resumable> {
        let c = &config.shared;
        Arc::new(Resumable {
            enabled: c.resume_enabled(),
            keep: c.stream_resume,
            max_bytes: c.stream_resume_max_bytes,
            grace: c.stream_resume_grace,
            idle: config.stream_idle_timeout,
            shared: Arc::clone(shared),
            streams: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn get(&self, id: &str) -> Option<Arc<Held>> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Starts driving `relay` for `identity`; returns the stream id and the first follower.
    pub fn start<S>(self: &Arc<Self>, identity: &str, relay: S) -> (String, Follow)
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let held = Arc::new(Held {
            identity: identity.to_owned(),
            buf: Mutex::default(),
            changed: watch::Sender::new(()),
            followers: AtomicUsize::new(0),
            followers_changed: Notify::new(),
        });
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Arc::clone(&held));
        let first = follow(Arc::clone(&held), 0);
        let mirror = self.shared.redis().map(|_| {
            Mirror::start(
                &self.shared,
                &id,
                identity,
                self.keep,
                self.idle,
                self.max_bytes,
            )
        });
        tokio::spawn(Arc::clone(self).drive(id.clone(), held, relay, mirror));
        (id, first)
    }

    async fn drive<S>(
        self: Arc<Self>,
        id: String,
        held: Arc<Held>,
        mut relay: S,
        mirror: Option<Mirror>,
    ) where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let mut alone_since: Option<Instant> = None;
        let abandoned = loop {
            let deadline = if held.followers.load(Ordering::Acquire) == 0 {
                Some(*alone_since.get_or_insert_with(Instant::now) + self.grace)
            } else {
                alone_since = None;
                None
            };
            tokio::select! {
                item = relay.next() => {
                    let Some(Ok(chunk)) = item else { break false };
                    if let Some(mirror) = &mirror {
                        mirror.append(&chunk);
                    }
                    held.buf
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .append(chunk, self.max_bytes);
                    held.changed.send_replace(());
                }
                () = held.followers_changed.notified() => {}
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if let Some(mirror) = &mirror && mirror.followed_elsewhere().await {
                        alone_since = None;
                        continue;
                    }
                    break true;
                }
            }
        };
        // Dropping the relay before its end is what asks Dify to stop.
        drop(relay);
        held.buf.lock().unwrap_or_else(PoisonError::into_inner).done = true;
        held.changed.send_replace(());
        if let Some(mirror) = mirror {
            mirror.finish(abandoned);
        }
        if !abandoned {
            tokio::time::sleep(self.keep).await;
        }
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// `GET /chat/streams/{id}?offset=N` for `identity`: here, or from Redis when another
    /// replica holds the stream.
    pub async fn resume(&self, identity: &str, id: &str, offset: u64) -> Result<Follow, ApiError> {
        if !valid_id(id) {
            return Err(not_found());
        }
        if let Some(held) = self.get(id) {
            if held.identity != identity {
                return Err(not_found());
            }
            {
                let buf = held.buf.lock().unwrap_or_else(PoisonError::into_inner);
                check_offset(offset, buf.start, buf.end)?;
            }
            return Ok(follow(held, offset));
        }
        match self.shared.redis() {
            Some(_) => RemoteFollow::open(&self.shared, id, identity, offset).await,
            None => Err(not_found()),
        }
    }
}

/// Counts a follower while it lives; the driver's grace starts when the last one goes.
struct Following(Arc<Held>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::AcqRel);
        self.0.followers_changed.notify_one();
    }
}

/// The body from `offset`, then the live tail to the end. A follower that falls so far
/// behind that its next bytes are no longer kept ends there (a resume then answers 410).
fn follow(held: Arc<Held>, offset: u64) -> Follow {
    held.followers.fetch_add(1, Ordering::AcqRel);
    held.followers_changed.notify_one();
    let changed = held.changed.subscribe();
    let state = (Following(held), offset, changed);
    futures_util::stream::unfold(state, |(following, mut pos, mut changed)| async move {
        loop {
            changed.mark_unchanged();
            let next = {
                let buf = following
                    .0
                    .buf
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pos < buf.start {
                    return None;
                }
                match buf.chunk_at(pos) {
                    Some(chunk) => Some(chunk),
                    None if buf.done => return None,
                    None => None,
                }
            };
            if let Some(chunk) = next {
                pos += chunk.len() as u64;
                return Some((Ok(chunk), (following, pos, changed)));
            }
            if changed.changed().await.is_err() {
                // Cannot happen while `Held` (which owns the sender) lives; end rather than spin.
                return None;
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_drops_its_oldest_chunks_first_and_finds_any_offset() {
        let mut buf = Buf::default();
        for piece in ["abcd", "efgh", "ijkl"] {
            buf.append(Bytes::from(piece), 8);
        }
        assert_eq!((buf.start, buf.end), (4, 12));
        assert_eq!(buf.chunk_at(5).as_deref(), Some(&b"fgh"[..]));
        assert_eq!(buf.chunk_at(8).as_deref(), Some(&b"ijkl"[..]));
        assert_eq!(buf.chunk_at(12), None);
        assert!(matches!(
            check_offset(3, 4, 12),
            Err(ApiError::StreamExpired)
        ));
        assert!(matches!(
            check_offset(13, 4, 12),
            Err(ApiError::InvalidParam(_))
        ));
        assert!(check_offset(12, 4, 12).is_ok());
    }

    #[test]
    fn a_single_chunk_larger_than_the_cap_is_still_kept() {
        let mut buf = Buf::default();
        buf.append(Bytes::from_static(b"0123456789"), 4);
        assert_eq!(buf.chunk_at(0).as_deref(), Some(&b"0123456789"[..]));
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits() {
        assert!(valid_id(&uuid::Uuid::new_v4().simple().to_string()));
        for bad in [
            "",
            "../../etc",
            "ABCDEF0123456789ABCDEF0123456789",
            &"a".repeat(33),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
