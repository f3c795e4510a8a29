//! dify-bff's integration tests: one binary, one module per behaviour area. Each test runs the
//! real server on an ephemeral port against the Dify emulator (`support`), except `cli`, which
//! runs the built binary, and `relay_properties`, which drives the relay directly.
//!
//! `cargo test --test api` runs them all; `cargo test --test api streaming::` one area.

mod support;

mod abuse;
mod apps;
mod bad_requests;
mod browser;
mod chat;
mod cli;
mod cross_site;
mod egress_proxy;
mod embedding;
mod files;
mod gateway;
mod history;
mod identity;
mod limits;
mod load;
mod memory_and_sockets;
mod nginx;
mod operations;
mod relay_properties;
mod shared_state;
mod slow_clients;
mod startup;
mod streaming;
mod upstream_errors;
mod workers;
