//! Raises the soft open-file limit to the hard limit at start-up (as nginx's
//! `worker_rlimit_nofile` does) and reports the stream capacity that gives.

/// Each relayed stream holds two sockets: the browser's and Dify's.
const FILES_PER_STREAM: u64 = 2;
/// Listeners, log files and the like.
const RESERVED_FILES: u64 = 64;

pub fn raise_open_files() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            open_files = limit,
            stream_capacity = limit.saturating_sub(RESERVED_FILES) / FILES_PER_STREAM,
            "open-file limit raised"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}
