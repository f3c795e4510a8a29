//! Resumable streams across replicas: the replica holding Dify's connection mirrors the bytes
//! into a Redis stream; any other replica replays and follows it.
//!
//! Keys, for stream id `I` (all expire by themselves):
//! - `difybff:rs:I` — a Redis stream; each chunk is an entry `d` with id `OFFSET-1` (its first
//!   byte's offset in the body), and the end is an entry `e` with id `END-1`;
//! - `difybff:rs:I:meta` — a hash: `identity`, `start` (first byte kept), `end`;
//! - `difybff:rs:I:follow` — set for a few seconds by a replica following the stream, so the
//!   holder does not stop Dify while someone elsewhere reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use tokio::sync::mpsc;

use super::resume::{Follow, check_offset};
use super::shared::Shared;
use super::store::StoreError;
use crate::error::ApiError;

/// Appends a mirror may queue before it gives up (Redis too slow to keep up).
const QUEUE: usize = 4096;
/// How long a following replica's mark lasts; renewed on every poll.
const FOLLOW_MARK_MS: u64 = 3000;
/// How often a remote follower asks for new bytes.
const POLL: Duration = Duration::from_millis(50);

fn keys(id: &str) -> (String, String, String) {
    let key = format!("difybff:rs:{id}");
    (format!("{key}:meta"), format!("{key}:follow"), key)
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

enum Op {
    Append(Bytes),
    Finish { abandoned: bool },
}

/// The holder's side: a task writes the stream's bytes to Redis in order, batching what has
/// queued up into one pipeline.
pub struct Mirror {
    ops: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    follow_key: String,
}

impl Mirror {
    pub fn start(
        shared: &Arc<Shared>,
        id: &str,
        identity: &str,
        keep: Duration,
        idle: Duration,
        max_bytes: usize,
    ) -> Mirror {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (_, follow_key, _) = keys(id);
        let writer = Writer {
            shared: Arc::clone(shared),
            id: id.to_owned(),
            identity: identity.to_owned(),
            keep,
            // Live keys outlive the longest silence a live stream can have.
            live_ttl: keep + idle + Duration::from_secs(60),
            max_bytes: max_bytes as u64,
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
        };
        tokio::spawn(writer.run(rx));
        Mirror {
            ops: tx,
            shared: Arc::clone(shared),
            follow_key,
        }
    }

    pub fn append(&self, chunk: &Bytes) {
        if self.ops.try_send(Op::Append(chunk.clone())).is_err() {
            tracing::warn!(
                "Redis is not keeping up with a stream; it resumes on this replica only"
            );
        }
    }

    pub fn finish(self, abandoned: bool) {
        let _ = self.ops.try_send(Op::Finish { abandoned });
    }

    /// Whether a replica elsewhere is following the stream right now.
    pub async fn followed_elsewhere(&self) -> bool {
        let key = self.follow_key.clone();
        self.shared
            .try_redis(async |r| {
                let mut conn = r.connection().await?;
                conn.exists::<_, bool>(key).await.map_err(failed)
            })
            .await
            .unwrap_or(false)
    }
}

struct Writer {
    shared: Arc<Shared>,
    id: String,
    identity: String,
    keep: Duration,
    live_ttl: Duration,
    max_bytes: u64,
    chunks: VecDeque<(u64, u64)>,
    start: u64,
    end: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut first = true;
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            let ops = std::mem::take(&mut batch);
            let pipe = self.pipeline(&ops, std::mem::take(&mut first));
            let sent = self
                .shared
                .try_redis(async |r| {
                    let mut conn: ConnectionManager = r.connection().await?;
                    pipe.query_async::<()>(&mut conn).await.map_err(failed)
                })
                .await;
            if sent.is_none() {
                // Bytes missed in Redis cannot be filled in later: resume stays on this replica.
                let (meta, _, key) = keys(&self.id);
                let _ = self
                    .shared
                    .try_redis(async |r| {
                        let mut conn = r.connection().await?;
                        conn.del::<_, ()>(&[meta, key]).await.map_err(failed)
                    })
                    .await;
                return;
            }
        }
    }

    fn pipeline(&mut self, ops: &[Op], first: bool) -> redis::Pipeline {
        let (meta, _, key) = keys(&self.id);
        let mut pipe = redis::pipe();
        if first {
            pipe.hset(&meta, "identity", &self.identity).ignore();
        }
        let mut ttl = self.live_ttl;
        for op in ops {
            match op {
                Op::Append(chunk) => {
                    let len = chunk.len() as u64;
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg(format!("{}-1", self.end))
                        .arg("d")
                        .arg(chunk.as_ref())
                        .ignore();
                    self.chunks.push_back((self.end, len));
                    self.end += len;
                    while self.end - self.start > self.max_bytes && self.chunks.len() > 1 {
                        if let Some((_, old)) = self.chunks.pop_front() {
                            self.start += old;
                        }
                    }
                }
                Op::Finish { abandoned: true } => {
                    pipe.del(&[&meta, &key]).ignore();
                    return pipe;
                }
                Op::Finish { abandoned: false } => {
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg(format!("{}-1", self.end))
                        .arg("e")
                        .arg("1")
                        .ignore();
                    ttl = self.keep;
                }
            }
        }
        pipe.cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(format!("{}-0", self.start))
            .ignore();
        pipe.hset_multiple(&meta, &[("start", self.start), ("end", self.end)])
            .ignore();
        let ttl_ms = ttl.as_millis().max(1) as i64;
        pipe.pexpire(&key, ttl_ms).ignore();
        pipe.pexpire(&meta, ttl_ms).ignore();
        pipe
    }
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
