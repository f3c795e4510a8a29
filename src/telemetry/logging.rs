//! Log set-up: `pretty` or `json` (one object per line); `RUST_LOG` sets levels. Colours only
//! on a terminal: a file or a log collector gets plain lines (and no time spent on escapes).
//!
//! The access log writes a line per request, so its plain line is written here directly
//! (the same text as tracing-subscriber's `Full` format, without its per-field styling), and
//! every line's timestamp reuses its date and time up to the second.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{self as subscriber_fmt, FmtContext};
use tracing_subscriber::registry::LookupSpan;

use super::log_sink::Buffered;
use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) leaves the first one in place.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hyper=warn,reqwest=warn"));
    let ansi = std::io::stdout().is_terminal();
    let _ = match format {
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
            .event_format(Lines(
                format::Format::default()
                    .with_target(false)
                    .with_timer(CachedTime),
            ))
            .try_init(),
    };
}

/// `Full` lines, with the access log's written without styling when colours are off.
struct Lines(format::Format<format::Full, CachedTime>);

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if writer.has_ansi_escapes()
            || meta.target() != crate::http::access_log::TARGET
            || ctx.event_scope().is_some()
        {
            return self.0.format_event(ctx, writer, event);
        }
        CachedTime.format_time(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        let mut fields = PlainFields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// `message name=value …` as tracing-subscriber's default visitor writes them uncoloured.
struct PlainFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for PlainFields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let pad = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = match name {
            "message" => write!(self.writer, "{pad}{value:?}"),
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{pad}{name}={value:?}")
            }
        };
    }
}

/// RFC 3339 UTC with microseconds, as tracing-subscriber's `SystemTime`; the text up to the
/// second is kept per thread and rebuilt once a second.
#[derive(Clone, Copy, Debug, Default)]
struct CachedTime;

const SECOND_LEN: usize = "2024-01-01T00:00:00".len();

thread_local! {
    static SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

impl FormatTime for CachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return subscriber_fmt::time::SystemTime.format_time(w);
        };
        let secs = now.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != secs {
            match second_text(secs) {
                Some(fresh) => {
                    text = fresh;
                    SECOND.set((secs, text));
                }
                None => return subscriber_fmt::time::SystemTime.format_time(w),
            }
        }
        let mut line = [0u8; SECOND_LEN + 8];
        line[..SECOND_LEN].copy_from_slice(&text);
        line[SECOND_LEN] = b'.';
        let mut micros = now.subsec_micros();
        for digit in line[SECOND_LEN + 1..SECOND_LEN + 7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        line[SECOND_LEN + 7] = b'Z';
        w.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
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

    #[derive(Clone, Default)]
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line<E>(format: E) -> String
    where
        E: for<'w> FormatEvent<tracing_subscriber::Registry, format::DefaultFields>
            + Send
            + Sync
            + 'static,
    {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = subscriber_fmt::fmt()
            .with_ansi(false)
            .event_format(format)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: crate::http::access_log::TARGET,
                method = %"GET",
                route = %"/conversations",
                status = 200u16,
                latency_ms = 0.25,
                quoted = "x y",
                "request"
            );
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.split_once(' ').unwrap().1.to_owned()
    }

    #[test]
    fn the_access_line_is_the_full_formats() {
        let ours = line(Lines(
            format::Format::default()
                .with_target(false)
                .with_timer(CachedTime),
        ));
        let theirs = line(format::Format::default().with_target(false));
        assert_eq!(ours, theirs);
        assert!(ours.starts_with(" INFO request method=GET route=/conversations status=200"));
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
