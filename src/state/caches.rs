//! Answers kept for a short while: the app settings (the same for every user) and readiness.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub const SETTINGS_TTL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct SettingsCache(Mutex<HashMap<&'static str, (Instant, Bytes)>>);

impl SettingsCache {
    pub fn get(&self, which: &'static str) -> Option<Bytes> {
        let cache = self.0.lock().ok()?;
        let (at, body) = cache.get(which)?;
        (at.elapsed() < SETTINGS_TTL).then(|| body.clone())
    }

    pub fn put(&self, which: &'static str, body: Bytes) {
        if let Ok(mut cache) = self.0.lock() {
            cache.insert(which, (Instant::now(), body));
        }
    }
}

/// The last readiness probe's result and when it was made.
#[derive(Default)]
pub struct Readiness(Mutex<Option<(Instant, Result<(), String>)>>);

impl Readiness {
    /// The last result, if it is younger than `ttl`.
    pub fn get(&self, ttl: Duration) -> Option<Result<(), String>> {
        let cache = self.0.lock().ok()?;
        let (at, result) = cache.as_ref()?;
        (at.elapsed() < ttl).then(|| result.clone())
    }

    pub fn put(&self, result: Result<(), String>) {
        if let Ok(mut cache) = self.0.lock() {
            *cache = Some((Instant::now(), result));
        }
    }
}
