//! A generation's upstream call runs in a task of its own: Dify goes on generating when the
//! client leaves or the request deadline passes, and the task goes on with it, so that what
//! the answer spends is counted (its relay or answer, dropped unread, counts it).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::ApiError;

/// The task's result, awaited until `timeout` (the request deadline): then 504, the task
/// going on.
pub(crate) async fn answered_in_time<T>(
    timeout: Duration,
    call: JoinHandle<T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ApiError::UpstreamTimeout)?
        .map_err(|e| ApiError::Internal(format!("generation task: {e}")))
}
