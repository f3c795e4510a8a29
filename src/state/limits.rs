//! Per-identity request rate and open-stream limits (API.md §1), for one process.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as GovernorLimiter};

use crate::error::ApiError;
use crate::telemetry::metrics;

/// Requests per identity per minute, burst = the limit: `governor`'s keyed GCRA limiter (a
/// sharded map, no global lock). `0` disables it.
pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    last_prune: Mutex<Option<Instant>>,
}

/// Above this many identities, those whose bucket has refilled are dropped, at most once per
/// [`PRUNE_EVERY`] so that many fresh identities cannot make every check scan the whole map.
const PRUNE_ABOVE: usize = 100_000;
const PRUNE_EVERY: Duration = Duration::from_secs(5);

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| GovernorLimiter::dashmap(Quota::per_minute(n))),
            last_prune: Mutex::new(None),
        }
    }

    pub fn check(&self, identity: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.prune(limiter);
        match limiter.check_key(&identity.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                metrics::rejected("rate_limited");
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }

    fn prune(&self, limiter: &DefaultKeyedRateLimiter<String>) {
        if limiter.len() <= PRUNE_ABOVE {
            return;
        }
        let Ok(mut last) = self.last_prune.try_lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        limiter.retain_recent();
    }
}

/// Open streams per identity and in all.
pub struct StreamLimiter {
    max_per_identity: usize,
    max_total: usize,
    total: AtomicUsize,
    per_identity: Mutex<HashMap<Arc<str>, usize>>,
}

/// Held by an open stream; frees its place when dropped.
pub struct StreamPermit {
    limiter: Arc<StreamLimiter>,
    identity: Arc<str>,
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

    pub fn acquire(self: &Arc<Self>, identity: &Arc<str>) -> Result<StreamPermit, ApiError> {
        self.acquire_checking(identity, true)
    }

    /// Counts the stream here but leaves the per-identity limit to another (shared) count;
    /// this process's `MAX_CONCURRENT_STREAMS` still holds.
    pub fn acquire_within_total(
        self: &Arc<Self>,
        identity: &Arc<str>,
    ) -> Result<StreamPermit, ApiError> {
        self.acquire_checking(identity, false)
    }

    fn acquire_checking(
        self: &Arc<Self>,
        identity: &Arc<str>,
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
        // One lookup; the identity's key is shared with its permits: one copy per identity,
        // not per stream.
        let entry = per_identity.entry(Arc::clone(identity));
        let count = match &entry {
            Entry::Occupied(held) => *held.get(),
            Entry::Vacant(_) => 0,
        };
        if per_identity_limit && count >= self.max_per_identity {
            metrics::rejected("rate_limited");
            return Err(ApiError::RateLimited {
                retry_after_secs: 5,
            });
        }
        let identity = match entry {
            Entry::Occupied(mut held) => {
                *held.get_mut() += 1;
                Arc::clone(held.key())
            }
            Entry::Vacant(first) => {
                let identity = Arc::clone(first.key());
                first.insert(1);
                identity
            }
        };
        self.total.fetch_add(1, Ordering::AcqRel);
        metrics::stream_opened();
        Ok(StreamPermit {
            limiter: Arc::clone(self),
            identity,
        })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        metrics::stream_closed();
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut per_identity) = self.limiter.per_identity.lock()
            && let Entry::Occupied(mut held) = per_identity.entry(Arc::clone(&self.identity))
        {
            *held.get_mut() -= 1;
            if *held.get() == 0 {
                held.remove();
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
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        assert!(matches!(
            limiter.check("a"),
            Err(ApiError::RateLimited {
                retry_after_secs: 20
            })
        ));
        assert!(limiter.check("b").is_ok(), "identities are separate");
        let fast = RateLimiter::new(600);
        for _ in 0..600 {
            assert!(fast.check("a").is_ok());
        }
        assert!(fast.check("a").is_err());
        std::thread::sleep(Duration::from_millis(120));
        assert!(fast.check("a").is_ok(), "a token every 100 ms comes back");
    }

    #[test]
    fn many_fresh_identities_are_pruned_once_they_have_refilled() {
        let limiter = RateLimiter::new(60_000);
        let Some(inner) = &limiter.limiter else {
            panic!("a limit of 60000 is a limit");
        };
        for i in 0..=PRUNE_ABOVE {
            assert!(limiter.check(&format!("old-{i}")).is_ok());
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(limiter.check("new").is_ok());
        assert!(
            inner.len() < 10,
            "refilled identities are dropped: {}",
            inner.len()
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
        let a1 = limiter.acquire(&"a".into()).unwrap();
        let _a2 = limiter.acquire(&"a".into()).unwrap();
        assert!(matches!(
            limiter.acquire(&"a".into()),
            Err(ApiError::RateLimited { .. })
        ));
        let _b1 = limiter.acquire(&"b".into()).unwrap();
        assert!(matches!(
            limiter.acquire(&"c".into()),
            Err(ApiError::Overloaded { .. })
        ));
        drop(a1);
        assert_eq!(limiter.open(), 2);
        assert!(limiter.acquire(&"a".into()).is_ok());
    }

    #[test]
    fn a_shared_count_leaves_only_the_process_total_here() {
        let limiter = Arc::new(StreamLimiter::new(1, 2));
        let _a1 = limiter.acquire_within_total(&"a".into()).unwrap();
        let _a2 = limiter.acquire_within_total(&"a".into()).unwrap();
        assert!(matches!(
            limiter.acquire_within_total(&"a".into()),
            Err(ApiError::Overloaded { .. })
        ));
    }
}
