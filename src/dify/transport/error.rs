//! A call that failed below HTTP: no connection, a broken one, a timeout. Its message and
//! source chain are the client's own (for the log and start-up diagnosis); never shown to a
//! browser, and never holding the URL (whose query may carry a signed file link).

use std::error::Error;
use std::fmt;

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug)]
pub struct TransportError {
    inner: BoxError,
    connect: bool,
    timeout: bool,
}

impl TransportError {
    /// A call whose URL hyper cannot send (never one built from a valid base URL).
    pub(super) fn request(e: impl Into<BoxError>) -> TransportError {
        TransportError {
            inner: e.into(),
            connect: false,
            timeout: false,
        }
    }

    /// The request never reached Dify: refused, DNS, TLS, or the connect timeout.
    pub fn is_connect(&self) -> bool {
        self.connect
    }

    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

/// Whether an error or any of its causes is a timeout.
fn timed_out(e: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

impl From<reqwest::Error> for TransportError {
    fn from(e: reqwest::Error) -> TransportError {
        TransportError {
            connect: e.is_connect(),
            timeout: e.is_timeout(),
            inner: Box::new(e.without_url()),
        }
    }
}

impl From<hyper_util::client::legacy::Error> for TransportError {
    fn from(e: hyper_util::client::legacy::Error) -> TransportError {
        TransportError {
            connect: e.is_connect(),
            timeout: timed_out(&e),
            inner: Box::new(e),
        }
    }
}

impl From<hyper::Error> for TransportError {
    fn from(e: hyper::Error) -> TransportError {
        TransportError {
            connect: false,
            timeout: timed_out(&e),
            inner: Box::new(e),
        }
    }
}

/// The error, then its causes ("client error (Connect): tcp connect error: Connection refused
/// (os error 111)").
impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail();
        if detail.is_empty() {
            write!(f, "{}", self.inner)
        } else {
            write!(f, "{}: {detail}", self.inner)
        }
    }
}

impl TransportError {
    /// What the causes under the client's own message say, each once: every layer tends to
    /// repeat the one below it, and the innermost say what went wrong.
    pub fn detail(&self) -> String {
        let mut causes: Vec<String> = Vec::new();
        let mut source = self.inner.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !causes.iter().any(|c| c.contains(&text)) {
                causes.retain(|c| !text.contains(c.as_str()));
                causes.push(text);
            }
            source = cause.source();
        }
        causes.join(": ")
    }

    /// Whether the connection was refused: nothing listens at Dify's address.
    pub fn refused(&self) -> bool {
        let mut source = self.inner.source();
        while let Some(cause) = source {
            if cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                return true;
            }
            source = cause.source();
        }
        false
    }
}

impl Error for TransportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One layer of an error chain, as hyper-util builds them.
    #[derive(Debug)]
    struct Layer(&'static str, Option<BoxError>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// A failed connect whose innermost cause is an I/O error of `kind`.
    fn failed(kind: std::io::ErrorKind, text: &'static str) -> TransportError {
        let io = std::io::Error::new(kind, text);
        let tcp = Layer("tcp connect error", Some(Box::new(io)));
        let client = Layer("client error (Connect)", Some(Box::new(tcp)));
        TransportError {
            timeout: timed_out(&client),
            connect: true,
            inner: Box::new(client),
        }
    }

    #[test]
    fn a_timed_out_cause_anywhere_in_the_chain_is_a_timeout() {
        assert!(failed(std::io::ErrorKind::TimedOut, "connect timeout").is_timeout());
        assert!(!failed(std::io::ErrorKind::ConnectionRefused, "refused").is_timeout());
    }

    #[test]
    fn the_message_names_each_cause_once_and_refused_is_recognised() {
        let refused = failed(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert!(refused.refused());
        assert_eq!(
            refused.to_string(),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert!(!failed(std::io::ErrorKind::TimedOut, "connect timeout").refused());
    }
}
