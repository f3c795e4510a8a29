//! The typed Dify client, the stream relay and the SSE watcher it uses.

pub mod client;
pub mod relay;
pub mod upstream_error;
pub mod watcher;

pub use client::{Caller, DifyClient, UpstreamJson};
