//! Logs (tracing) and metrics (Prometheus).

#[cfg(test)]
pub mod captured;
pub mod log_sink;
pub mod logging;
pub mod metrics;
