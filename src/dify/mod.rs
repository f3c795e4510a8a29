//! The only code that talks to Dify: the typed client, its request bodies, the answers it
//! relays, the stream relay and the SSE watcher it uses.

pub mod answer;
pub mod bodies;
pub mod client;
pub mod diagnose;
pub mod relay;
mod retry;
pub mod transport;
pub mod upstream_error;
pub mod watcher;

pub use answer::{Answer, Guard};
pub use client::{Caller, DifyClient};
