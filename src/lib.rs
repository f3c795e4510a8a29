//! dify-bff: a backend-for-frontend for Dify chat apps. It holds the Dify key, gives each
//! browser its own identity and relays Dify's answers byte for byte.

pub mod apps;
pub mod config;
pub mod dify;
pub mod error;
pub mod http;
pub mod identity;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use server::{serve, serve_on};
