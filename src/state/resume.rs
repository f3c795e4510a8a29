//! Resumable streams (API.md §7). The `POST /chat` body is the stream's leader: it polls the
//! relay itself and passes Dify's chunks on untouched, keeping their bytes (bounded, each
//! chunk coded against the next: [`kept`]) and waking resume followers only when there are
//! any. When the leader is dropped before the relay ends (the browser left), a task takes the
//! relay over and keeps filling the buffer while someone follows; with no follower for
//! `STREAM_RESUME_GRACE_SECS` it drops the relay (whose drop asks Dify to stop). The bytes
//! stay for `STREAM_RESUME_SECS` after the end, a stopped stream's too: a browser back after
//! the grace still gets what was relayed. With Redis, the bytes are also mirrored there
//! ([`super::resume_redis`]) so that any replica can serve a resume.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use self::kept::Kept;
use super::background::Background;
use super::resume_redis::{Mirror, Mirrors, RemoteFollow};
use super::shared::Shared;
use crate::config::Config;
use crate::error::ApiError;

mod kept;

/// The body of a resume.
pub type Follow = BoxStream<'static, Result<Bytes, std::io::Error>>;

pub struct Resumable {
    enabled: bool,
    keep: Duration,
    max_bytes: usize,
    grace: Duration,
    shared: Arc<Shared>,
    mirrors: Mirrors,
    streams: Mutex<HashMap<Key, Arc<Held>>>,
    /// Ended streams in the order they end, each removed `keep` after: one task for all.
    expiry: Mutex<Expiry>,
    background: Background,
}

/// A stream's id as two halves: a `u128` would align the map's entries and the stream's body
/// to 16 bytes, padding both.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    high: u64,
    low: u64,
}

impl From<u128> for Key {
    fn from(id: u128) -> Key {
        Key {
            high: (id >> 64) as u64,
            low: id as u64,
        }
    }
}

/// One stream's kept bytes and who follows it.
struct Held {
    identity: Arc<str>,
    kept: Mutex<Kept>,
    /// Woken on every append while someone follows, at the end, and when a follower comes or
    /// goes (the take-over task's grace).
    changed: Notify,
}

impl Held {
    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a copy of `chunk` (a chunk from the connection shares its whole read buffer).
    fn append(&self, chunk: &[u8], max_bytes: usize) {
        let followed = {
            let mut kept = self.kept();
            kept.append(chunk, max_bytes);
            kept.followers > 0
        };
        if followed {
            self.changed.notify_waiters();
        }
    }

    fn finish(&self) {
        {
            let mut kept = self.kept();
            kept.done = true;
            kept.shrink();
        }
        self.changed.notify_waiters();
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

/// A stream id as its clients see it.
pub struct StreamId([u8; uuid::fmt::Simple::LENGTH]);

impl Deref for StreamId {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ever filled with lowercase hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("No such stream.".into())
}

impl Resumable {
    pub fn new(config: &Config, shared: &Arc<Shared>) -> Arc<Resumable> {
        let c = &config.shared;
        let background = Background::here();
        Arc::new(Resumable {
            enabled: c.resume_enabled(),
            keep: c.stream_resume,
            max_bytes: c.stream_resume_max_bytes,
            grace: c.stream_resume_grace,
            shared: Arc::clone(shared),
            mirrors: Mirrors::new(
                background.clone(),
                shared,
                c.stream_resume,
                config.stream_idle_timeout,
                c.stream_resume_max_bytes,
            ),
            streams: Mutex::default(),
            expiry: Mutex::default(),
            background,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<Key, Arc<Held>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `relay`, for `identity`, resumable; returns the stream id and the `POST /chat`
    /// body, which drives the relay.
    pub fn start<S>(self: &Arc<Self>, identity: Arc<str>, relay: S) -> (StreamId, Leader<S>)
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let uuid = uuid::Uuid::new_v4();
        let mut text = [0u8; uuid::fmt::Simple::LENGTH];
        uuid.simple().encode_lower(&mut text);
        let key = Key::from(uuid.as_u128());
        let held = Arc::new(Held {
            identity,
            kept: Mutex::default(),
            changed: Notify::new(),
        });
        let mirror = self
            .shared
            .redis()
            .map(|_| Box::new(self.mirrors.start(uuid.as_u128(), &held.identity)));
        self.streams().insert(key, Arc::clone(&held));
        let leader = Leader {
            relay: Some(relay),
            held,
            owner: Arc::clone(self),
            key,
            mirror,
        };
        (StreamId(text), leader)
    }

    /// The end of a stream: its bytes stay `keep`, or go at once when they were `lost` (the
    /// runtime gone before they were all read).
    fn ended(self: &Arc<Self>, key: Key, mirror: Option<Box<Mirror>>, lost: bool) {
        if let Some(mirror) = mirror {
            mirror.finish(lost);
        }
        if lost {
            self.streams().remove(&key);
            return;
        }
        let start = {
            let mut expiry = self.expiry();
            expiry.ended.push_back((Instant::now() + self.keep, key));
            !std::mem::replace(&mut expiry.running, true)
        };
        if start {
            self.background.spawn(expire(Arc::downgrade(self)));
        }
    }

    fn expiry(&self) -> MutexGuard<'_, Expiry> {
        self.expiry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries on a relay whose leader is gone while someone follows, or for the grace.
    async fn take_over<S>(
        self: Arc<Self>,
        key: Key,
        held: Arc<Held>,
        mut relay: S,
        mut mirror: Option<Box<Mirror>>,
    ) where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
    {
        let mut alone_since: Option<Instant> = None;
        loop {
            // Created before the count is read: a follower that comes or goes after wakes it.
            let followers_changed = held.changed.notified();
            let deadline = if held.kept().followers == 0 {
                Some(*alone_since.get_or_insert_with(Instant::now) + self.grace)
            } else {
                alone_since = None;
                None
            };
            tokio::select! {
                item = relay.next() => {
                    let Some(Ok(chunk)) = item else { break };
                    if let Some(mirror) = &mut mirror {
                        mirror.append(&chunk);
                    }
                    held.append(&chunk, self.max_bytes);
                }
                () = followers_changed => {}
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if let Some(mirror) = &mirror && mirror.followed_elsewhere().await {
                        alone_since = None;
                        continue;
                    }
                    break;
                }
            }
        }
        // Dropping the relay before its end is what asks Dify to stop.
        drop(relay);
        held.finish();
        self.ended(key, mirror, false);
    }

    /// `GET /chat/streams/{id}?offset=N` for `identity`: here, or from Redis when another
    /// replica holds the stream.
    pub async fn resume(&self, identity: &str, id: &str, offset: u64) -> Result<Follow, ApiError> {
        if !valid_id(id) {
            return Err(not_found());
        }
        let key = u128::from_str_radix(id, 16).map_err(|_| not_found())?;
        let held = self.streams().get(&Key::from(key)).cloned();
        if let Some(held) = held {
            if *held.identity != *identity {
                return Err(not_found());
            }
            {
                let kept = held.kept();
                check_offset(offset, kept.start(), kept.end())?;
            }
            return Ok(follow(held, offset));
        }
        match self.shared.redis() {
            Some(_) => RemoteFollow::open(&self.shared, id, identity, offset).await,
            None => Err(not_found()),
        }
    }
}

/// The ended streams waiting for their time: a queue rather than a channel, whose blocks
/// would be allocated and freed as streams end.
#[derive(Default)]
struct Expiry {
    ended: VecDeque<(Instant, Key)>,
    /// Whether [`expire`] is running; it stops when the queue is empty.
    running: bool,
}

/// Removes each ended stream when its time is up (they end in order, all kept as long).
async fn expire(owner: Weak<Resumable>) {
    let mut running = Running(Some(owner.clone()));
    loop {
        let at = {
            let Some(owner) = owner.upgrade() else { return };
            let mut expiry = owner.expiry();
            match expiry.ended.front() {
                Some(&(at, _)) => at,
                None => {
                    // A burst of ended streams leaves no room behind it.
                    expiry.ended.shrink_to_fit();
                    expiry.running = false;
                    running.0 = None;
                    return;
                }
            }
        };
        tokio::time::sleep_until(at).await;
        let Some(owner) = owner.upgrade() else { return };
        let due = owner.expiry().ended.pop_front();
        if let Some((_, key)) = due {
            owner.streams().remove(&key);
        }
    }
}

/// Lets the next ended stream start [`expire`] again if it stops before the queue is empty
/// (its runtime shutting down).
struct Running(Option<Weak<Resumable>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(owner) = self.0.take().and_then(|owner| owner.upgrade()) {
            owner.expiry().running = false;
        }
    }
}

/// The `POST /chat` body of a resumable stream: the relay's chunks, kept as they pass.
pub struct Leader<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    relay: Option<S>,
    held: Arc<Held>,
    owner: Arc<Resumable>,
    key: Key,
    /// Boxed: only with Redis.
    mirror: Option<Box<Mirror>>,
}

impl<S> Stream for Leader<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(relay) = this.relay.as_mut() else {
            return Poll::Ready(None);
        };
        this.held.kept().prefetch();
        match ready!(relay.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                if let Some(mirror) = &mut this.mirror {
                    mirror.append(&chunk);
                }
                this.held.append(&chunk, this.owner.max_bytes);
                Poll::Ready(Some(Ok(chunk)))
            }
            _ => {
                this.relay = None;
                this.held.finish();
                this.owner.ended(this.key, this.mirror.take(), false);
                Poll::Ready(None)
            }
        }
    }
}

impl<S> Drop for Leader<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        let (owner, held, mirror) = (
            Arc::clone(&self.owner),
            Arc::clone(&self.held),
            self.mirror.take(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(owner.take_over(self.key, held, relay, mirror));
            }
            Err(_) => {
                drop(relay);
                held.finish();
                owner.ended(self.key, mirror, true);
            }
        }
    }
}

/// Counts a follower while it lives; the take-over's grace starts when the last one goes.
struct Following(Arc<Held>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.kept().followers -= 1;
        self.0.changed.notify_waiters();
    }
}

/// The body from `offset`, then the live tail to the end. A follower that falls so far
/// behind that its next bytes are no longer kept ends there (a resume then answers 410).
fn follow(held: Arc<Held>, offset: u64) -> Follow {
    held.kept().followers += 1;
    held.changed.notify_waiters();
    futures_util::stream::unfold(
        (Following(held), offset),
        |(following, mut pos)| async move {
            let piece = loop {
                let mut changed = pin!(following.0.changed.notified());
                changed.as_mut().enable();
                let next = {
                    let kept = following.0.kept();
                    if pos < kept.start() {
                        return None;
                    }
                    let next = kept.bytes_at(pos);
                    if next.is_none() && kept.done {
                        return None;
                    }
                    next
                };
                match next {
                    Some(piece) => break piece,
                    None => changed.await,
                }
            };
            pos += piece.len() as u64;
            Some((Ok(piece), (following, pos)))
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_stream_fits_a_small_allocation() {
        // The Arc's counts and `Held` in one 184-byte block: 192 with malloc's header.
        assert!(size_of::<Held>() <= 168, "{}", size_of::<Held>());
    }

    #[test]
    fn a_leader_and_its_relay_fit_a_small_allocation() {
        // The body of a `POST /chat` stream is the leader over the route's `Metered` (24 more
        // bytes): 216, a 224-byte block with malloc's header.
        let leader = size_of::<Leader<crate::dify::relay::RelayStream>>();
        assert!(leader <= 192, "{leader}");
    }

    #[test]
    fn a_resume_starts_inside_the_kept_range_or_at_its_end() {
        assert!(matches!(
            check_offset(5, 6, 12),
            Err(ApiError::StreamExpired)
        ));
        assert!(matches!(
            check_offset(13, 6, 12),
            Err(ApiError::InvalidParam(_))
        ));
        assert!(check_offset(6, 6, 12).is_ok());
        assert!(check_offset(12, 6, 12).is_ok());
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

    #[test]
    fn a_stream_id_reads_back_as_its_key() {
        let uuid = uuid::Uuid::new_v4();
        let mut text = [0u8; uuid::fmt::Simple::LENGTH];
        uuid.simple().encode_lower(&mut text);
        let id = StreamId(text);
        assert!(valid_id(&id));
        assert_eq!(u128::from_str_radix(&id, 16).ok(), Some(uuid.as_u128()));
    }
}
