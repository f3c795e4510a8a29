//! Resumable streams across replicas: the replica holding Dify's connection mirrors the bytes
//! into a Redis stream; any other replica replays and follows it.
//!
//! Keys, for stream id `I` (all expire by themselves):
//! - `difybff:rs:I` — a Redis stream; each chunk is an entry `d` with id `OFFSET-1` (its first
//!   byte's offset in the body), and the end is an entry `e` with id `END-1`;
//! - `difybff:rs:I:meta` — a hash: `identity`, `start` (first byte kept), `end`;
//! - `difybff:rs:I:follow` — set for a few seconds by a replica following the stream, so the
//!   holder does not stop Dify while someone elsewhere reads.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;

use super::background::Background;
use super::resume::{Follow, check_offset};
use super::shared::Shared;
use super::store::StoreError;
use crate::error::ApiError;

/// Writes all mirrors may queue before one gives up (Redis too slow to keep up).
const QUEUE: usize = 65536;
/// How long a following replica's mark lasts; renewed on every poll.
const FOLLOW_MARK_MS: u64 = 3000;
/// How often a remote follower asks for new bytes.
const POLL: Duration = Duration::from_millis(50);

fn keys(id: &str) -> (String, String, String) {
    let key = format!("difybff:rs:{id}");
    (format!("{key}:meta"), format!("{key}:follow"), key)
}

/// A stream's id as its keys spell it (the 32-hex-digit UUID).
fn key_id(id: u128) -> String {
    format!("{id:032x}")
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

enum Op {
    Open { identity: String },
    Append(Bytes),
    Finish { lost: bool },
}

/// The mirrors of this replica's streams: one task writes every stream's bytes to Redis in
/// order, batching what has queued up (all streams together) into one pipeline.
pub struct Mirrors {
    ops: OnceLock<mpsc::Sender<(u128, Op)>>,
    background: Background,
    shared: Arc<Shared>,
    keep: Duration,
    live_ttl: Duration,
    max_bytes: u64,
}

impl Mirrors {
    pub fn new(
        background: Background,
        shared: &Arc<Shared>,
        keep: Duration,
        idle: Duration,
        max_bytes: usize,
    ) -> Mirrors {
        Mirrors {
            ops: OnceLock::new(),
            background,
            shared: Arc::clone(shared),
            keep,
            // Live keys outlive the longest silence a live stream can have.
            live_ttl: keep + idle + Duration::from_secs(60),
            max_bytes: max_bytes as u64,
        }
    }

    /// Starts mirroring stream `id` of `identity`.
    pub fn start(&self, id: u128, identity: &str) -> Mirror {
        let ops = self.ops.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let writer = Writer {
                shared: Arc::clone(&self.shared),
                keep: self.keep,
                live_ttl: self.live_ttl,
                max_bytes: self.max_bytes,
                streams: HashMap::new(),
            };
            self.background.spawn(writer.run(rx));
            tx
        });
        let mut mirror = Mirror {
            ops: ops.clone(),
            shared: Arc::clone(&self.shared),
            id,
            broken: false,
        };
        mirror.send(Op::Open {
            identity: identity.to_owned(),
        });
        mirror
    }
}

/// The holder's side of one stream.
pub struct Mirror {
    ops: mpsc::Sender<(u128, Op)>,
    shared: Arc<Shared>,
    id: u128,
    /// A write could not be queued: the stream resumes on this replica only.
    broken: bool,
}

impl Mirror {
    fn send(&mut self, op: Op) {
        if self.broken {
            return;
        }
        if self.ops.try_send((self.id, op)).is_err() {
            self.broken = true;
            tracing::warn!(
                "Redis is not keeping up with a stream; it resumes on this replica only"
            );
        }
    }

    pub fn append(&mut self, chunk: &Bytes) {
        self.send(Op::Append(chunk.clone()));
    }

    pub fn finish(mut self, lost: bool) {
        // A broken mirror's keys are dropped (a resume elsewhere would miss bytes).
        let lost = lost || self.broken;
        self.broken = false;
        self.send(Op::Finish { lost });
    }

    /// Whether a replica elsewhere is following the stream right now.
    pub async fn followed_elsewhere(&self) -> bool {
        let (_, key, _) = keys(&key_id(self.id));
        self.shared
            .try_redis(async |r| {
                let mut conn = r.connection().await?;
                conn.exists::<_, bool>(key).await.map_err(failed)
            })
            .await
            .unwrap_or(false)
    }
}

/// What the writer knows of one mirrored stream.
struct Mirrored {
    key: String,
    meta: String,
    start: u64,
    end: u64,
    /// Each chunk written, as (offset, length), for trimming at chunk boundaries.
    chunks: VecDeque<(u64, u64)>,
    ttl: Duration,
    /// In the batch being built: its trim, range and expiry still to add.
    in_batch: bool,
    finished: bool,
    /// A write failed: nothing more is written, the keys are gone.
    failed: bool,
}

struct Writer {
    shared: Arc<Shared>,
    keep: Duration,
    live_ttl: Duration,
    max_bytes: u64,
    streams: HashMap<u128, Mirrored>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(u128, Op)>) {
        let mut batch = Vec::new();
        let mut touched = Vec::new();
        while rx.recv_many(&mut batch, 1024).await > 0 {
            let pipe = self.pipeline(batch.drain(..), &mut touched);
            let sent = self
                .shared
                .try_redis(async |r| {
                    let mut conn: ConnectionManager = r.connection().await?;
                    pipe.query_async::<()>(&mut conn).await.map_err(failed)
                })
                .await;
            if sent.is_none() {
                // Bytes missed in Redis cannot be filled in later: those streams resume on
                // this replica only.
                let mut gone = Vec::new();
                for id in touched.drain(..) {
                    if let Some(m) = self.streams.get_mut(&id) {
                        m.failed = true;
                    }
                    let (meta, _, key) = keys(&key_id(id));
                    gone.push(key);
                    gone.push(meta);
                }
                let _ = self
                    .shared
                    .try_redis(async |r| {
                        let mut conn = r.connection().await?;
                        conn.del::<_, ()>(&gone).await.map_err(failed)
                    })
                    .await;
            }
            touched.clear();
        }
    }

    /// One pipeline for a batch of writes; `touched` gets the streams it writes to.
    fn pipeline(
        &mut self,
        ops: impl Iterator<Item = (u128, Op)>,
        touched: &mut Vec<u128>,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let mut entry = [0u8; 48];
        for (id, op) in ops {
            if let Op::Open { identity } = &op {
                let (meta, _, key) = keys(&key_id(id));
                pipe.hset(&meta, "identity", identity).ignore();
                self.streams.insert(
                    id,
                    Mirrored {
                        key,
                        meta,
                        start: 0,
                        end: 0,
                        chunks: VecDeque::new(),
                        ttl: self.live_ttl,
                        in_batch: false,
                        finished: false,
                        failed: false,
                    },
                );
            }
            let Some(m) = self.streams.get_mut(&id) else {
                continue;
            };
            if m.failed {
                if matches!(op, Op::Finish { .. }) {
                    self.streams.remove(&id);
                }
                continue;
            }
            if !m.in_batch {
                m.in_batch = true;
                touched.push(id);
            }
            match op {
                Op::Open { .. } => {}
                Op::Append(chunk) => {
                    let len = chunk.len() as u64;
                    pipe.cmd("XADD")
                        .arg(&m.key)
                        .arg(entry_id(&mut entry, m.end, 1))
                        .arg("d")
                        .arg(chunk.as_ref())
                        .ignore();
                    m.chunks.push_back((m.end, len));
                    m.end += len;
                    while m.end - m.start > self.max_bytes && m.chunks.len() > 1 {
                        if let Some((_, old)) = m.chunks.pop_front() {
                            m.start += old;
                        }
                    }
                }
                Op::Finish { lost: true } => {
                    pipe.del(&[&m.meta, &m.key]).ignore();
                    self.streams.remove(&id);
                }
                Op::Finish { lost: false } => {
                    pipe.cmd("XADD")
                        .arg(&m.key)
                        .arg(entry_id(&mut entry, m.end, 1))
                        .arg("e")
                        .arg("1")
                        .ignore();
                    m.ttl = self.keep;
                    m.finished = true;
                }
            }
        }
        for id in touched.iter() {
            let Some(m) = self.streams.get_mut(id) else {
                continue;
            };
            m.in_batch = false;
            pipe.cmd("XTRIM")
                .arg(&m.key)
                .arg("MINID")
                .arg(entry_id(&mut entry, m.start, 0))
                .ignore();
            pipe.hset_multiple(&m.meta, &[("start", m.start), ("end", m.end)])
                .ignore();
            let ttl_ms = m.ttl.as_millis().max(1) as i64;
            pipe.pexpire(&m.key, ttl_ms).ignore();
            pipe.pexpire(&m.meta, ttl_ms).ignore();
            if m.finished {
                self.streams.remove(id);
            }
        }
        pipe
    }
}

/// `OFFSET-SEQ`: with `SEQ` 1, the id of the entry whose first byte is at `offset`.
fn entry_id(buf: &mut [u8; 48], offset: u64, seq: u8) -> &[u8] {
    let mut out = &mut buf[..];
    let _ = write!(out, "{offset}-{seq}");
    let left = out.len();
    &buf[..48 - left]
}

/// A follower on a replica that does not hold the stream.
pub struct RemoteFollow;

enum Entry {
    Data(u64, Bytes),
    End,
}

fn entries(reply: StreamRangeReply) -> Vec<(String, Entry)> {
    reply
        .ids
        .into_iter()
        .filter_map(|e| {
            let offset: u64 = e.id.split('-').next()?.parse().ok()?;
            let entry = if e.map.contains_key("e") {
                Entry::End
            } else {
                Entry::Data(offset, Bytes::from(e.get::<Vec<u8>>("d")?))
            };
            Some((e.id, entry))
        })
        .collect()
}

impl RemoteFollow {
    /// Checks the id, the identity and the offset, then follows the stream from `offset`.
    pub async fn open(
        shared: &Arc<Shared>,
        id: &str,
        identity: &str,
        offset: u64,
    ) -> Result<Follow, ApiError> {
        let not_found = || ApiError::NotFound("No such stream.".into());
        let (meta, follow_key, key) = keys(id);
        let found = shared
            .try_redis(async |r| {
                let mut conn = r.connection().await?;
                let (owner, start, end): (Option<String>, Option<u64>, Option<u64>) =
                    redis::cmd("HMGET")
                        .arg(&meta)
                        .arg(&["identity", "start", "end"])
                        .query_async(&mut conn)
                        .await
                        .map_err(failed)?;
                let before: StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(format!("{offset}-1"))
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(failed)?;
                let _: () = conn
                    .set_options(
                        &follow_key,
                        1,
                        redis::SetOptions::default()
                            .with_expiration(redis::SetExpiry::PX(FOLLOW_MARK_MS)),
                    )
                    .await
                    .map_err(failed)?;
                Ok((conn, owner, start.unwrap_or(0), end.unwrap_or(0), before))
            })
            .await
            .ok_or_else(not_found)?;
        let (conn, owner, start, end, before) = found;
        if owner.as_deref() != Some(identity) {
            return Err(not_found());
        }
        check_offset(offset, start, end)?;
        let mut last_id = "0-0".to_owned();
        let mut first = None;
        let mut done = false;
        if let Some((entry_id, entry)) = entries(before).into_iter().next() {
            last_id = entry_id;
            match entry {
                Entry::Data(at, chunk) => {
                    let from = usize::try_from(offset - at).unwrap_or(usize::MAX);
                    if from < chunk.len() {
                        first = Some(chunk.slice(from..));
                    }
                }
                Entry::End => done = true,
            }
        }
        let state = Remote {
            conn,
            key,
            follow_key,
            last_id,
            pending: first.into_iter().collect(),
            done,
            quiet_since: tokio::time::Instant::now(),
            give_up_after: Duration::from_secs(600),
        };
        Ok(futures_util::stream::unfold(state, Remote::next).boxed())
    }
}

struct Remote {
    conn: ConnectionManager,
    key: String,
    follow_key: String,
    last_id: String,
    pending: VecDeque<Bytes>,
    done: bool,
    quiet_since: tokio::time::Instant,
    give_up_after: Duration,
}

impl Remote {
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Remote)> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some((Ok(chunk), self));
            }
            if self.done || self.quiet_since.elapsed() > self.give_up_after {
                return None;
            }
            let (reply, _): (StreamRangeReply, ()) = redis::pipe()
                .cmd("XRANGE")
                .arg(&self.key)
                .arg(format!("({}", self.last_id))
                .arg("+")
                .arg("COUNT")
                .arg(256)
                .cmd("SET")
                .arg(&self.follow_key)
                .arg(1)
                .arg("PX")
                .arg(FOLLOW_MARK_MS)
                .query_async(&mut self.conn)
                .await
                .ok()?;
            let got = entries(reply);
            if got.is_empty() {
                let exists: bool = self.conn.exists(&self.key).await.ok()?;
                if !exists {
                    return None;
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            self.quiet_since = tokio::time::Instant::now();
            for (id, entry) in got {
                self.last_id = id;
                match entry {
                    Entry::Data(_, chunk) => self.pending.push_back(chunk),
                    Entry::End => {
                        self.done = true;
                        break;
                    }
                }
            }
        }
    }
}
