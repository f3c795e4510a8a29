//! Per-identity request rate (token bucket) and open-stream limits (API.md §1).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::telemetry::metrics;

/// `POST /chat` requests per identity per minute; burst = the limit.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<Buckets>,
}

/// Above this many identities, buckets that have refilled (untouched for a minute) are dropped,
/// at most once per [`PRUNE_EVERY`] so that many fresh identities cannot make every check scan
/// the whole map.
const PRUNE_ABOVE: usize = 100_000;
const PRUNE_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Buckets {
    map: HashMap<String, Bucket>,
    last_prune: Option<Instant>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    pub fn check(&self, identity: &str) -> Result<(), ApiError> {
        self.check_at(identity, Instant::now())
    }

    fn check_at(&self, identity: &str, now: Instant) -> Result<(), ApiError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| ApiError::Internal("rate limiter lock poisoned".into()))?;
        let prune_due = buckets
            .last_prune
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY);
        if buckets.map.len() > PRUNE_ABOVE && prune_due {
            buckets.last_prune = Some(now);
            buckets
                .map
                .retain(|_, b| now.duration_since(b.updated) < Duration::from_secs(60));
        }
        let bucket = buckets.map.entry(identity.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            metrics::rejected("rate_limited");
            let wait = ((1.0 - bucket.tokens) / per_sec).ceil().max(1.0);
            Err(ApiError::RateLimited {
                retry_after_secs: wait as u64,
            })
        }
    }
}

/// Open streams per identity and in all.
pub struct StreamLimiter {
    max_per_identity: usize,
    max_total: usize,
    total: AtomicUsize,
    per_identity: Mutex<HashMap<String, usize>>,
}

/// Held by an open stream; frees its place when dropped.
pub struct StreamPermit {
    limiter: Arc<StreamLimiter>,
    identity: String,
}

impl StreamLimiter {
    pub fn new(max_per_identity: usize, max_total: usize) -> StreamLimiter {
        StreamLimiter {
            max_per_identity,
            max_total,
            total: AtomicUsize::new(0),
            per_identity: Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    pub fn acquire(self: &Arc<Self>, identity: &str) -> Result<StreamPermit, ApiError> {
        self.acquire_checking(identity, true)
    }

    /// Counts the stream here but leaves the per-identity limit to another (shared) count;
    /// this process's `MAX_CONCURRENT_STREAMS` still holds.
    pub fn acquire_within_total(
        self: &Arc<Self>,
        identity: &str,
    ) -> Result<StreamPermit, ApiError> {
        self.acquire_checking(identity, false)
    }

    fn acquire_checking(
        self: &Arc<Self>,
        identity: &str,
        per_identity_limit: bool,
    ) -> Result<StreamPermit, ApiError> {
        let mut per_identity = self
            .per_identity
            .lock()
            .map_err(|_| ApiError::Internal("stream limiter lock poisoned".into()))?;
        if self.total.load(Ordering::Acquire) >= self.max_total {
            metrics::rejected("overloaded");
            return Err(ApiError::Overloaded {
                retry_after_secs: 5,
            });
        }
        let count = per_identity.entry(identity.to_owned()).or_insert(0);
        if per_identity_limit && *count >= self.max_per_identity {
            metrics::rejected("rate_limited");
            return Err(ApiError::RateLimited {
                retry_after_secs: 5,
            });
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        metrics::stream_opened();
        Ok(StreamPermit {
            limiter: Arc::clone(self),
            identity: identity.to_owned(),
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        metrics::stream_closed();
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut per_identity) = self.limiter.per_identity.lock()
            && let Some(count) = per_identity.get_mut(&self.identity)
        {
            *count -= 1;
            if *count == 0 {
                per_identity.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_equals_the_limit_then_refills() {
        let limiter = RateLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        assert!(matches!(
            limiter.check_at("a", t0),
            Err(ApiError::RateLimited {
                retry_after_secs: 20
            })
        ));
        assert!(limiter.check_at("b", t0).is_ok(), "identities are separate");
        assert!(limiter.check_at("a", t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn many_fresh_identities_are_pruned_at_most_every_few_seconds() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            assert!(limiter.check_at(&format!("old-{i}"), t0).is_ok());
        }
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.check_at("new-a", later).is_ok());
        let count = |l: &RateLimiter| l.buckets.lock().map(|b| b.map.len()).unwrap_or(0);
        assert_eq!(count(&limiter), 1, "refilled buckets are dropped");
        for i in 0..=PRUNE_ABOVE {
            assert!(limiter.check_at(&format!("fresh-{i}"), later).is_ok());
        }
        let soon = later + Duration::from_secs(1);
        assert!(limiter.check_at("new-b", soon).is_ok());
        assert!(
            count(&limiter) > PRUNE_ABOVE,
            "no second scan within PRUNE_EVERY"
        );
        assert!(
            limiter.check_at("new-a", soon).is_err(),
            "a pruned map still limits the identities it keeps"
        );
    }

    #[test]
    fn zero_disables_the_rate_limit() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
    }

    #[test]
    fn stream_permits_are_counted_per_identity_and_in_all() {
        let limiter = Arc::new(StreamLimiter::new(2, 3));
        let a1 = limiter.acquire("a").unwrap();
        let _a2 = limiter.acquire("a").unwrap();
        assert!(matches!(
            limiter.acquire("a"),
            Err(ApiError::RateLimited { .. })
        ));
        let _b1 = limiter.acquire("b").unwrap();
        assert!(matches!(
            limiter.acquire("c"),
            Err(ApiError::Overloaded { .. })
        ));
        drop(a1);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.acquire("a").is_ok());
    }

    #[test]
    fn a_shared_count_leaves_only_the_process_total_here() {
        let limiter = Arc::new(StreamLimiter::new(1, 2));
        let _a1 = limiter.acquire_within_total("a").unwrap();
        let _a2 = limiter.acquire_within_total("a").unwrap();
        assert!(matches!(
            limiter.acquire_within_total("a"),
            Err(ApiError::Overloaded { .. })
        ));
    }
}
