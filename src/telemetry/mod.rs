//! Logs (tracing) and metrics (Prometheus).

pub mod logging;
pub mod metrics;
