//! Log set-up: `pretty` or `json` (one object per line); `RUST_LOG` sets levels. Colours only
//! on a terminal: a file or a log collector gets plain lines (and no time spent on escapes).
//!
//! The access log writes a line per request, so where lines are plain its line goes straight to
//! the buffer ([`append_plain`]: the same text as tracing-subscriber's `Full` format), and every
//! line's timestamp reuses its date and time up to the second.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{self as subscriber_fmt};

use super::log_sink::{self, Buffered};
use crate::config::LogFormat;

/// Set by [`init`] when every line is a plain `pretty` one (no colours): a hot line may then be
/// written straight to the buffer by [`append_plain`].
static PLAIN: AtomicBool = AtomicBool::new(false);

/// Adds a line of the plain format to the log: its time, then what `write` adds (from the two
/// spaces before the level to the newline). `false`, and nothing written, where lines are
/// JSON or coloured: the caller then logs through tracing.
pub fn append_plain(write: impl FnOnce(&mut Vec<u8>)) -> bool {
    if !PLAIN.load(Ordering::Relaxed) {
        return false;
    }
    let Some(time) = now_text() else {
        return false;
    };
    log_sink::append(|out| {
        out.extend_from_slice(&time);
        write(out);
    });
    true
}

/// Installs the global subscriber; a second call (tests) leaves the first one in place.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hyper=warn,reqwest=warn"));
    let ansi = std::io::stdout().is_terminal();
    let installed = match format {
        LogFormat::Json => subscriber_fmt::fmt()
            .with_writer(Buffered::start())
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(ansi)
            .with_timer(CachedTime)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => subscriber_fmt::fmt()
            .with_writer(Buffered::start())
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_target(false)
            .with_timer(CachedTime)
            .try_init(),
    };
    if installed.is_ok() {
        PLAIN.store(format == LogFormat::Pretty && !ansi, Ordering::Relaxed);
    }
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's `SystemTime`; the text up to the
/// second is kept per thread and rebuilt once a second.
#[derive(Clone, Copy, Debug, Default)]
struct CachedTime;

const SECOND_LEN: usize = "2024-01-01T00:00:00".len();
const TIME_LEN: usize = SECOND_LEN + ".000000Z".len();

thread_local! {
    static SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

impl FormatTime for CachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match now_text() {
            Some(text) => w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => subscriber_fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SS.ffffffZ`; `None` outside the years 1970–9999.
fn now_text() -> Option<[u8; TIME_LEN]> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let secs = now.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = second_text(secs)?;
        SECOND.set((secs, text));
    }
    let mut line = [0u8; TIME_LEN];
    line[..SECOND_LEN].copy_from_slice(&text);
    line[SECOND_LEN] = b'.';
    let mut micros = now.subsec_micros();
    for digit in line[SECOND_LEN + 1..SECOND_LEN + 7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line[SECOND_LEN + 7] = b'Z';
    Some(line)
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, for years 0–9999 (others are left to the library).
fn second_text(secs: u64) -> Option<[u8; SECOND_LEN]> {
    let time = cookie::time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = String::with_capacity(SECOND_LEN);
    write!(
        text,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
    .ok()?;
    text.into_bytes().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library_time() -> String {
        let mut text = String::new();
        subscriber_fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut text))
            .unwrap();
        text
    }

    #[test]
    fn timestamps_match_the_library_format() {
        let mut ours = String::new();
        CachedTime.format_time(&mut Writer::new(&mut ours)).unwrap();
        CachedTime.format_time(&mut Writer::new(&mut ours)).unwrap();
        let theirs = library_time();
        assert_eq!(ours.len(), 2 * theirs.len(), "{ours} / {theirs}");
        assert_eq!(ours[..SECOND_LEN - 3], theirs[..SECOND_LEN - 3]);
        assert!(ours.ends_with('Z'));
    }

    #[test]
    fn second_text_is_rfc3339() {
        assert_eq!(
            second_text(0).map(|t| String::from_utf8_lossy(&t).into_owned()),
            Some("1970-01-01T00:00:00".to_owned())
        );
        assert_eq!(
            second_text(1_709_251_199).map(|t| String::from_utf8_lossy(&t).into_owned()),
            Some("2024-02-29T23:59:59".to_owned())
        );
    }
}
