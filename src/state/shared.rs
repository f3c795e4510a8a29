//! Limits and budgets that hold across replicas when `REDIS_URL` is set, and in this process
//! otherwise or while Redis is unreachable (API.md §7). Handlers never know which answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::limits::StreamLimiter;
use super::redis_store::RedisStore;
use super::store::{Bucket, LocalStore, SharedStore, StoreError};
use crate::config::Config;
use crate::dify::answer::Guard;
use crate::error::ApiError;
use crate::telemetry::metrics;

const DAY_SECS: u64 = 24 * 60 * 60;
/// How often the health check asks Redis whether it is back.
const PING_EVERY: Duration = Duration::from_millis(500);

pub struct Shared {
    local: LocalStore,
    redis: Option<RedisStore>,
    streams: Arc<StreamLimiter>,
    budget: u64,
    health: Health,
}

/// Whether Redis answered last time, and when its failure was last logged.
struct Health {
    up: AtomicBool,
    shown_url: String,
    log_every: Duration,
    last_logged: Mutex<Option<Instant>>,
}

impl Health {
    fn failed(&self, error: &StoreError) {
        if self.up.swap(false, Ordering::AcqRel) {
            metrics::redis_up(false);
        }
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= self.log_every) {
            *last = Some(Instant::now());
            tracing::error!(
                redis = %self.shown_url,
                error = %error.0,
                "Redis unreachable; limits, budgets and resumable streams use this replica's own state"
            );
        }
    }

    fn answered(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            metrics::redis_up(true);
            tracing::info!(redis = %self.shown_url, "Redis reachable again; state is shared");
        }
    }
}

/// `GET /usage`.
#[derive(Debug, Serialize)]
pub struct UsageReport {
    pub tokens_used: u64,
    pub tokens_budget: u64,
    pub resets_at: u64,
}

/// Days since the Unix epoch (UTC) and seconds until the next UTC midnight.
fn today() -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (now / DAY_SECS, DAY_SECS - now % DAY_SECS)
}

impl Shared {
    pub fn new(config: &Config, streams: Arc<StreamLimiter>) -> Arc<Shared> {
        let shared = &config.shared;
        let redis = shared.redis_url.clone().map(|url| {
            RedisStore::new(
                url,
                shared.redis_ca_pem.clone(),
                config.rate_limit_per_minute,
                config.max_streams_per_identity,
                shared.stream_lease,
            )
        });
        let this = Arc::new(Shared {
            local: LocalStore::new(config.rate_limit_per_minute, Arc::clone(&streams)),
            streams,
            budget: shared.token_budget_per_day,
            health: Health {
                up: AtomicBool::new(true),
                shown_url: shared.redis_url_shown.clone().unwrap_or_default(),
                log_every: shared.redis_error_log_every,
                last_logged: Mutex::new(None),
            },
            redis,
        });
        if this.redis.is_some() {
            tracing::info!(redis = %this.health.shown_url, "limits, budgets and resumable streams are shared through Redis");
            metrics::redis_up(true);
            tokio::spawn(watch_health(Arc::downgrade(&this)));
        }
        this
    }

    /// Redis while it answers; `None` without it or while it is down.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis
            .as_ref()
            .filter(|_| self.health.up.load(Ordering::Acquire))
    }

    /// Runs `op` against Redis; on failure notes it and returns `None` (the caller falls back).
    pub(super) async fn try_redis<T>(
        &self,
        op: impl AsyncFnOnce(&RedisStore) -> Result<T, StoreError>,
    ) -> Option<T> {
        let redis = self.redis()?;
        match op(redis).await {
            Ok(value) => Some(value),
            Err(e) => {
                self.health.failed(&e);
                None
            }
        }
    }

    pub async fn check_rate(&self, bucket: Bucket, identity: &str) -> Result<(), ApiError> {
        if let Some(outcome) = self
            .try_redis(async |r| r.check_rate(bucket, identity).await)
            .await
        {
            return outcome;
        }
        self.local
            .check_rate(bucket, identity)
            .await
            .unwrap_or(Ok(()))
    }

    /// One of the identity's stream slots (shared) within this process's total.
    pub async fn acquire_stream(&self, identity: &Arc<str>) -> Result<Guard, ApiError> {
        if self.redis().is_some() {
            let here = self.streams.acquire_within_total(identity)?;
            if let Some(outcome) = self
                .try_redis(async |r| r.acquire_stream(identity).await)
                .await
            {
                return outcome.map(|lease| Box::new((here, lease)) as Guard);
            }
        }
        self.local.acquire_stream_of(identity)
    }

    /// 429 `budget_exceeded` once the identity has spent today's budget.
    pub async fn check_budget(&self, identity: &str) -> Result<(), ApiError> {
        if self.budget == 0 {
            return Ok(());
        }
        let (day, until_midnight) = today();
        if self.used(identity, day).await >= self.budget {
            metrics::rejected("budget_exceeded");
            return Err(ApiError::BudgetExceeded {
                retry_after_secs: until_midnight,
            });
        }
        Ok(())
    }

    async fn used(&self, identity: &str, day: u64) -> u64 {
        if let Some(used) = self.try_redis(async |r| r.usage(identity, day).await).await {
            return used;
        }
        self.local.usage(identity, day).await.unwrap_or(0)
    }

    /// Counts an answer's tokens (here always, so a fallback still knows them, and in Redis).
    pub async fn add_usage(&self, identity: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let (day, _) = today();
        let _ = self.local.add_usage(identity, day, tokens).await;
        let _ = self
            .try_redis(async |r| r.add_usage(identity, day, tokens).await)
            .await;
    }

    pub async fn usage(&self, identity: &str) -> UsageReport {
        let (day, _) = today();
        UsageReport {
            tokens_used: self.used(identity, day).await,
            tokens_budget: self.budget,
            resets_at: (day + 1) * DAY_SECS,
        }
    }
}

/// A callback that counts an answer's tokens for its identity once the answer has ended.
pub type UsageSink = crate::dify::answer::TokenSink;

/// The sink for `identity`'s answers: counted at once without Redis, else on a task of its
/// own.
pub fn usage_sink(shared: &Arc<Shared>, identity: Arc<str>) -> UsageSink {
    let shared = Arc::clone(shared);
    Box::new(move |tokens| count_usage(shared, identity, tokens))
}

/// What a [`usage_sink`] does with an answer's tokens, for a caller that keeps its state
/// unboxed.
pub fn count_usage(shared: Arc<Shared>, identity: Arc<str>, tokens: u64) {
    if shared.redis.is_none() {
        shared.local.count_usage(&identity, today().0, tokens);
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { shared.add_usage(&identity, tokens).await });
    }
}

/// Pings Redis while the state lives: notices it going away without a request failing first,
/// and coming back (the connection manager reconnects by itself).
async fn watch_health(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(redis) = shared.redis.as_ref() else {
            return;
        };
        match redis.ping().await {
            Ok(()) => shared.health.answered(),
            Err(e) => shared.health.failed(&e),
        }
    }
}

/// One rate-limit bucket, as handlers see it (`state.rate`, `state.assist_rate`).
pub struct RateCheck {
    bucket: Bucket,
    shared: Arc<Shared>,
}

impl RateCheck {
    pub fn new(bucket: Bucket, shared: &Arc<Shared>) -> RateCheck {
        RateCheck {
            bucket,
            shared: Arc::clone(shared),
        }
    }

    pub async fn check(&self, identity: &str) -> Result<(), ApiError> {
        self.shared.check_rate(self.bucket, identity).await
    }
}
