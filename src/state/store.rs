//! The state replicas share (API.md §7) behind one small trait, with an in-process and a Redis
//! implementation ([`super::redis_store`]). Handlers use [`super::shared::Shared`], which picks
//! one and falls back to this process's state while Redis is unreachable.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::limits::{RateLimiter, StreamLimiter};
use crate::dify::answer::Guard;
use crate::error::ApiError;

/// The two rate-limit buckets (`RATE_LIMIT_PER_MINUTE` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// `POST /chat`.
    Chat,
    /// Suggested questions, generated names, uploads.
    Assist,
}

impl Bucket {
    pub fn label(self) -> &'static str {
        match self {
            Bucket::Chat => "chat",
            Bucket::Assist => "assist",
        }
    }
}

/// The store could not answer (Redis unreachable, a timeout, a bad reply).
#[derive(Debug)]
pub struct StoreError(pub String);

/// What may be shared between replicas. A limit reached is `Ok(Err(ApiError))`; a store that
/// cannot answer is `Err(StoreError)`, and the caller falls back.
pub trait SharedStore: Send + Sync {
    /// Takes one request from the identity's bucket, atomically.
    fn check_rate(
        &self,
        bucket: Bucket,
        identity: &str,
    ) -> impl Future<Output = Result<Result<(), ApiError>, StoreError>> + Send;

    /// Takes one of the identity's stream slots; the guard holds it until dropped.
    fn acquire_stream(
        &self,
        identity: &str,
    ) -> impl Future<Output = Result<Result<Guard, ApiError>, StoreError>> + Send;

    /// Adds tokens to the identity's count for `day` (days since the Unix epoch, UTC).
    fn add_usage(
        &self,
        identity: &str,
        day: u64,
        tokens: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The identity's tokens counted for `day`.
    fn usage(
        &self,
        identity: &str,
        day: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One process's state: the token buckets and stream counts of [`super::limits`], and usage
/// in a map keeping only today's counts.
pub struct LocalStore {
    chat: RateLimiter,
    assist: RateLimiter,
    streams: Arc<StreamLimiter>,
    usage: Mutex<Usage>,
}

#[derive(Default)]
struct Usage {
    day: u64,
    by_identity: HashMap<String, u64>,
}

impl LocalStore {
    pub fn new(per_minute: u32, streams: Arc<StreamLimiter>) -> LocalStore {
        LocalStore {
            chat: RateLimiter::new(per_minute),
            assist: RateLimiter::new(per_minute),
            streams,
            usage: Mutex::default(),
        }
    }

    /// [`SharedStore::acquire_stream`] for an identity already shared (a new identity's count
    /// shares it rather than copying it).
    pub fn acquire_stream_of(&self, identity: &Arc<str>) -> Result<Guard, ApiError> {
        self.streams
            .acquire(identity)
            .map(|permit| Box::new(permit) as Guard)
    }

    /// [`SharedStore::add_usage`], which never waits here.
    pub fn count_usage(&self, identity: &str, day: u64, tokens: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        if usage.day != day {
            usage.day = day;
            usage.by_identity.clear();
        }
        match usage.by_identity.get_mut(identity) {
            Some(count) => *count += tokens,
            None => {
                usage.by_identity.insert(identity.to_owned(), tokens);
            }
        }
    }
}

impl SharedStore for LocalStore {
    async fn check_rate(
        &self,
        bucket: Bucket,
        identity: &str,
    ) -> Result<Result<(), ApiError>, StoreError> {
        Ok(match bucket {
            Bucket::Chat => self.chat.check(identity),
            Bucket::Assist => self.assist.check(identity),
        })
    }

    async fn acquire_stream(&self, identity: &str) -> Result<Result<Guard, ApiError>, StoreError> {
        Ok(self.acquire_stream_of(&Arc::from(identity)))
    }

    async fn add_usage(&self, identity: &str, day: u64, tokens: u64) -> Result<(), StoreError> {
        self.count_usage(identity, day, tokens);
        Ok(())
    }

    async fn usage(&self, identity: &str, day: u64) -> Result<u64, StoreError> {
        let usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(if usage.day == day {
            usage.by_identity.get(identity).copied().unwrap_or(0)
        } else {
            0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(per_minute: u32, per_identity: usize) -> LocalStore {
        LocalStore::new(per_minute, Arc::new(StreamLimiter::new(per_identity, 100)))
    }

    #[tokio::test]
    async fn usage_is_counted_per_identity_and_starts_again_each_day() {
        let s = store(0, 1);
        s.add_usage("a", 10, 5).await.unwrap();
        s.add_usage("a", 10, 7).await.unwrap();
        s.add_usage("b", 10, 1).await.unwrap();
        assert_eq!(s.usage("a", 10).await.unwrap(), 12);
        assert_eq!(s.usage("b", 10).await.unwrap(), 1);
        s.add_usage("a", 11, 3).await.unwrap();
        assert_eq!(s.usage("a", 11).await.unwrap(), 3, "a new day");
        assert_eq!(s.usage("b", 11).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_two_rate_buckets_are_separate() {
        let s = store(1, 1);
        assert!(s.check_rate(Bucket::Chat, "a").await.unwrap().is_ok());
        assert!(s.check_rate(Bucket::Chat, "a").await.unwrap().is_err());
        assert!(s.check_rate(Bucket::Assist, "a").await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_stream_slot_is_held_until_its_guard_is_dropped() {
        let s = store(0, 1);
        let held = s.acquire_stream("a").await.unwrap().unwrap();
        assert!(matches!(
            s.acquire_stream("a").await.unwrap(),
            Err(ApiError::RateLimited { .. })
        ));
        drop(held);
        assert!(s.acquire_stream("a").await.unwrap().is_ok());
    }
}
