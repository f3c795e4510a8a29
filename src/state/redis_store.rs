//! [`SharedStore`] in Redis: every check is one Lua script (one round trip, atomic), using
//! Redis's clock so that replicas agree. Keys start with `difybff:`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use secrecy::SecretString;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::store::{Bucket, SharedStore, StoreError};
use crate::config::redis_client;
use crate::dify::answer::Guard;
use crate::error::ApiError;
use crate::telemetry::metrics;

/// A token bucket of `ARGV[1]` requests per minute (burst = the limit). Returns
/// `{allowed, seconds to wait}`.
const RATE: &str = r"
local cap = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
local per_ms = cap / 60000
tokens = math.min(cap, tokens + math.max(0, now - ts) * per_ms)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.max(1, math.ceil((1 - tokens) / per_ms / 1000))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return {allowed, wait}
";

/// Stream slots are leases in a sorted set scored by expiry: expired ones are dropped, then one
/// is added if fewer than `ARGV[1]` remain. Returns 1 when taken.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
";

/// Pushes a live lease's expiry forward (never re-adds one already dropped).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
";

/// Usage counts outlive their UTC day by a day.
const USAGE_TTL_SECS: i64 = 2 * 24 * 60 * 60;

pub struct RedisStore {
    url: SecretString,
    /// `REDIS_CA_CERT_FILE`'s CAs, trusted instead of the system's for a `rediss://` server.
    ca_pem: Option<Vec<u8>>,
    manager: OnceCell<ConnectionManager>,
    per_minute: u32,
    max_streams: usize,
    lease: Duration,
    rate: Script,
    acquire: Script,
    renew: Script,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A failed connection. A certificate no trusted CA signed (rustls: "invalid peer certificate:
/// UnknownIssuer") says what to set, since the log line is all an operator sees of it.
fn not_connected(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    if text.contains("UnknownIssuer") {
        return StoreError(format!(
            "{text} (no CA this process trusts signed the Redis server's certificate: a private CA goes in REDIS_CA_CERT_FILE)"
        ));
    }
    StoreError(text)
}

impl RedisStore {
    pub fn new(
        url: SecretString,
        ca_pem: Option<Vec<u8>>,
        per_minute: u32,
        max_streams: usize,
        lease: Duration,
    ) -> Self {
        RedisStore {
            url,
            ca_pem,
            manager: OnceCell::new(),
            per_minute,
            max_streams,
            lease,
            rate: Script::new(RATE),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
        }
    }

    /// The connection, made on first use (start-up never waits for Redis); the manager then
    /// reconnects by itself.
    pub async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        self.manager
            .get_or_try_init(|| async {
                let client = redis_client(&self.url, self.ca_pem.as_deref()).map_err(failed)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(not_connected)
            })
            .await
            .cloned()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(failed)
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis().max(1) as u64
    }
}

impl SharedStore for RedisStore {
    async fn check_rate(
        &self,
        bucket: Bucket,
        identity: &str,
    ) -> Result<Result<(), ApiError>, StoreError> {
        if self.per_minute == 0 {
            return Ok(Ok(()));
        }
        let mut conn = self.connection().await?;
        let key = format!("difybff:rate:{}:{identity}", bucket.label());
        let (allowed, wait): (u8, u64) = self
            .rate
            .key(key)
            .arg(self.per_minute)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        if allowed == 1 {
            return Ok(Ok(()));
        }
        metrics::rejected("rate_limited");
        Ok(Err(ApiError::RateLimited {
            retry_after_secs: wait,
        }))
    }

    async fn acquire_stream(&self, identity: &str) -> Result<Result<Guard, ApiError>, StoreError> {
        let mut conn = self.connection().await?;
        let key = format!("difybff:streams:{identity}");
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let taken: u8 = self
            .acquire
            .key(&key)
            .arg(self.max_streams)
            .arg(&lease)
            .arg(self.lease_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        if taken != 1 {
            metrics::rejected("rate_limited");
            return Ok(Err(ApiError::RateLimited {
                retry_after_secs: 5,
            }));
        }
        let held = CancellationToken::new();
        tokio::spawn(keep_lease(
            conn,
            self.renew.clone(),
            key,
            lease,
            self.lease,
            held.clone(),
        ));
        Ok(Ok(Box::new(held.drop_guard())))
    }

    async fn add_usage(&self, identity: &str, day: u64, tokens: u64) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let key = format!("difybff:usage:{day}:{identity}");
        redis::pipe()
            .atomic()
            .incr(&key, tokens)
            .ignore()
            .expire(&key, USAGE_TTL_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(failed)
    }

    async fn usage(&self, identity: &str, day: u64) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let key = format!("difybff:usage:{day}:{identity}");
        let used: Option<u64> = conn.get(key).await.map_err(failed)?;
        Ok(used.unwrap_or(0))
    }
}

/// Renews a lease every third of its life while the stream holds it, and gives it back when
/// the stream ends. If this process dies, nothing renews it and it lapses by itself.
async fn keep_lease(
    mut conn: ConnectionManager,
    renew: Script,
    key: String,
    lease: String,
    ttl: Duration,
    held: CancellationToken,
) {
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            () = held.cancelled() => break,
            _ = tick.tick() => {
                let renewed: redis::RedisResult<u8> = renew
                    .key(&key)
                    .arg(&lease)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = renewed {
                    tracing::debug!(error = %e, "could not renew a stream lease");
                }
            }
        }
    }
    let released: redis::RedisResult<u8> = conn.zrem(&key, &lease).await;
    if let Err(e) = released {
        tracing::debug!(error = %e, "could not release a stream lease; it lapses by itself");
    }
}
