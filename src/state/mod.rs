//! What every handler shares, built once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

pub mod background;
pub mod caches;
pub mod limits;
pub mod redis_store;
pub mod resume;
mod resume_redis;
pub mod shared;
pub mod store;

use self::limits::StreamLimiter;
use self::resume::Resumable;
use self::shared::{RateCheck, Shared};
use self::store::Bucket;
use crate::apps::Apps;
use crate::config::Config;
use crate::error::ApiError;
use crate::identity::IdentityPolicy;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    /// The Dify apps served, each with its own client, settings and readiness (`apps.rs`).
    pub apps: Apps,
    pub identity: IdentityPolicy,
    /// `POST /chat` per identity.
    pub rate: RateCheck,
    /// The other calls that make Dify spend tokens or storage (suggested questions,
    /// generated names, uploads), per identity, in a bucket of their own.
    pub assist_rate: RateCheck,
    /// This process's open streams (`MAX_CONCURRENT_STREAMS`, and per identity without Redis).
    pub streams: Arc<StreamLimiter>,
    /// Limits and budgets shared across replicas (API.md §7).
    pub shared: Arc<Shared>,
    /// Streams kept for resuming (API.md §7).
    pub resumable: Arc<Resumable>,
    /// Request body bytes all requests may hold in memory at once (`MAX_BUFFERED_BODY_BYTES`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Set when shutdown begins: no new stream starts, readiness fails.
    pub draining: AtomicBool,
    /// Cancelled (through [`crate::dify::relay::end_streams`]) when the shutdown grace is over:
    /// open streams end with `shutting_down`.
    pub streams_cancel: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config) -> Result<AppState, ApiError> {
        let apps = Apps::new(&config)?;
        let streams = Arc::new(StreamLimiter::new(
            config.max_streams_per_identity,
            config.max_concurrent_streams,
        ));
        let shared = Shared::new(&config, Arc::clone(&streams));
        Ok(AppState(Arc::new(Inner {
            identity: IdentityPolicy::new(&config),
            rate: RateCheck::new(Bucket::Chat, &shared),
            assist_rate: RateCheck::new(Bucket::Assist, &shared),
            streams,
            resumable: Resumable::new(&config, &shared),
            shared,
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                config
                    .max_buffered_body_bytes
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            draining: AtomicBool::new(false),
            streams_cancel: CancellationToken::new(),
            apps,
            config,
        })))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
