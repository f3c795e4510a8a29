//! Logs (tracing) and metrics (Prometheus).

pub mod limits;
pub mod logging;
pub mod metrics;
