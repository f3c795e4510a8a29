//! One log line and the request metrics per request: method, route, app, status, latency, a
//! short hash of the identity and the request id. Never the key, cookies or message contents.

use std::io::Write as _;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;

use super::request_id::RequestId;
use crate::apps::Apps;
use crate::identity::LogHash;
use crate::telemetry::{logging, metrics};

/// The target of the access log's lines (`RUST_LOG` filters by it; the log set-up writes
/// them on a fast path).
pub const TARGET: &str = module_path!();

/// What the log line needs from the request, taken before it is handed on.
pub struct Entry {
    started: Instant,
    method: Method,
    /// Whether INFO lines are written.
    log: bool,
    request_id: Option<RequestId>,
}

impl Entry {
    pub fn start(request: &Request) -> Entry {
        let log = tracing::enabled!(tracing::Level::INFO);
        let request_id = log
            .then(|| request.extensions().get::<RequestId>().cloned())
            .flatten();
        Entry {
            started: Instant::now(),
            method: request.method().clone(),
            log,
            request_id,
        }
    }

    /// `route`: the route that matched, if one did.
    pub fn finish(
        self,
        response: &Response,
        apps: &Apps,
        route: Option<&MatchedPath>,
        identity: Option<LogHash>,
    ) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let route = match route {
            Some(route) => route.as_str(),
            // The static fallback has no route: a read it answered is the page or its assets.
            None if matches!(self.method, Method::GET | Method::HEAD) && status < 400 => "page",
            None => "unmatched",
        };
        let app = apps.label(response);
        metrics::request(&self.method, route, app, status, elapsed);
        if !self.log {
            return;
        }
        let request_id = self.request_id.as_ref().map_or("", RequestId::as_str);
        let identity = identity.as_ref().map_or("", LogHash::as_str);
        let line = Line {
            method: self.method.as_str(),
            route,
            app,
            status,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            identity,
            request_id,
        };
        if !logging::append_plain(|out| line.write_plain(out)) {
            line.emit();
        }
    }
}

/// One request's line.
struct Line<'a> {
    method: &'a str,
    route: &'a str,
    app: &'a str,
    status: u16,
    latency_ms: f64,
    identity: &'a str,
    request_id: &'a str,
}

impl Line<'_> {
    /// Through tracing: for JSON lines and colours.
    fn emit(&self) {
        tracing::info!(
            method = %self.method,
            route = %self.route,
            app = %self.app,
            status = self.status,
            latency_ms = self.latency_ms,
            identity = %self.identity,
            request_id = %self.request_id,
            "request"
        );
    }

    /// What the plain format makes of [`Line::emit`]'s event after its time, written without
    /// the event's dispatch and field visitors (a fifth of a small request's own work).
    fn write_plain(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"  INFO request method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" route=");
        out.extend_from_slice(self.route.as_bytes());
        out.extend_from_slice(b" app=");
        out.extend_from_slice(self.app.as_bytes());
        out.extend_from_slice(b" status=");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b" latency_ms=");
        write_debug_f64(out, self.latency_ms);
        out.extend_from_slice(b" identity=");
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(b" request_id=");
        out.extend_from_slice(self.request_id.as_bytes());
        out.push(b'\n');
    }
}

/// `{:?}` of `x`. Between 1e-4 and 1e16 that is the shortest decimal that reads back as `x`,
/// with a `.0` when whole: what ryu writes there, without `fmt`'s machinery.
fn write_debug_f64(out: &mut Vec<u8>, x: f64) {
    if x.is_finite() && (1e-4..1e16).contains(&x.abs()) {
        out.extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
    } else {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{x:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::captured::logged;

    /// What the `pretty` logs' format writes for `line` through tracing, after the time.
    fn through_tracing(line: &Line<'_>) -> String {
        let text = logged(tracing::Level::TRACE, || line.emit());
        text[text.find(' ').unwrap()..].to_owned()
    }

    #[test]
    fn latencies_are_written_as_debug_writes_them() {
        let mut samples = vec![
            0.0,
            -0.0,
            1e-5,
            0.0001,
            0.00012345,
            0.25,
            1.0,
            12.000123456,
            1e15,
            9.999e15,
            1e16,
            -3.5,
            1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            0.1 + 0.2,
        ];
        let mut x = 1.0e-6f64;
        while x < 1e17 {
            samples.extend([x, x * 1.000_001, x * 0.999_999_7]);
            x *= 3.7;
        }
        for x in samples {
            let mut ours = Vec::new();
            write_debug_f64(&mut ours, x);
            assert_eq!(String::from_utf8(ours).unwrap(), format!("{x:?}"));
        }
    }

    #[test]
    fn the_plain_line_is_the_one_tracing_would_write() {
        let lines = [
            Line {
                method: "GET",
                route: "/conversations",
                app: "",
                status: 200,
                latency_ms: 0.25,
                identity: "0123456789ab",
                request_id: "6f1c0d0e-5e7a-4d55-9a58-7d4c3c2f1a00",
            },
            Line {
                method: "POST",
                route: "/apps/{name}/chat",
                app: "sales",
                status: 429,
                latency_ms: 12.000123456,
                identity: "",
                request_id: "",
            },
        ];
        for line in lines {
            let mut ours = Vec::new();
            line.write_plain(&mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), through_tracing(&line));
        }
    }
}
