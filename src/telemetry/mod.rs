//! Logs (tracing) and metrics (Prometheus).

pub mod log_sink;
pub mod logging;
pub mod metrics;
