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
        Ok(self
            .streams
            .acquire(identity)
            .map(|permit| Box::new(permit) as Guard))
    }

    async fn add_usage(&self, identity: &str, day: u64, tokens: u64) -> Result<(), StoreError> {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        if usage.day != day {
            usage.day = day;
            usage.by_identity.clear();
        }
        *usage.by_identity.entry(identity.to_owned()).or_insert(0) += tokens;
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
