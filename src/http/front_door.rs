//! The one middleware every request passes through (one layer rather than one per concern:
//! each `from_fn` layer costs a boxed future and a service clone per request). In order: the
//! request id, the access log, the refusals that need no handler (a too-long target, a peer
//! that may not act for users, a cross-site write), then CORS: a refused peer gets no preflight.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::cors::Cors;
use super::routed::{self, Answered};
use super::{access_log, cross_site, peer_trust, request_id, request_line};
use crate::error::ApiError;
use crate::identity::{self, LogHash};
use crate::state::AppState;

/// The layer over the whole router (not an axum layer over each route: that would box every
/// route again). The routes' handlers pass it their route ([`routed`]).
#[derive(Clone)]
pub struct FrontDoor {
    state: AppState,
}

impl FrontDoor {
    pub fn new(state: AppState) -> FrontDoor {
        FrontDoor { state }
    }
}

impl<S> Layer<S> for FrontDoor {
    type Service = Door<S>;

    fn layer(&self, inner: S) -> Door<S> {
        Door {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Door<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Door<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Entered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// A refusal (with CORS headers, so an allowed page can read it), a preflight's answer, or
    /// the handler's response; each logged and stamped with the request id. An answered request
    /// is still routed, without running its handler, for its route in the log.
    fn call(&mut self, mut request: Request) -> Self::Future {
        let request_id = request_id::assign(&mut request);
        let log = access_log::Entry::start(&request);
        let after = After {
            state: self.state.clone(),
            request_id,
            log,
        };
        let cors = Cors::of(&self.state, &request);
        let cors = match refusal(&self.state, &request) {
            Some(error) => {
                let mut response = error.into_response();
                cors.finish(&self.state, &mut response);
                request.extensions_mut().insert(Answered::new(response));
                None
            }
            None => match cors.preflight() {
                Some(preflight) => {
                    request.extensions_mut().insert(Answered::new(preflight));
                    None
                }
                None => Some(cors),
            },
        };
        Entered {
            handler: self.inner.call(request),
            cors,
            after: Some(after),
        }
    }
}

/// What every response gets on its way out: its access-log line and the request id.
struct After {
    state: AppState,
    request_id: Option<HeaderValue>,
    log: access_log::Entry,
}

impl After {
    fn apply(self, mut response: Response, identity: Option<LogHash>) -> Response {
        let route = routed::take_route();
        self.log
            .finish(&response, &self.state.apps, route.as_ref(), identity);
        request_id::stamp(&mut response, self.request_id);
        response
    }
}

pin_project! {
    /// The routed request; `cors` is `None` when the front door answered it itself.
    pub struct Entered<F> {
        #[pin]
        handler: F,
        cors: Option<Cors>,
        after: Option<After>,
    }
}

impl<F> Future for Entered<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        routed::forget_route();
        identity::forget_log_hash();
        let mut response = ready!(this.handler.poll(cx))?;
        let log_hash = identity::take_log_hash();
        if let Some(after) = this.after.take() {
            if let Some(cors) = this.cors.take() {
                cors.finish(&after.state, &mut response);
            }
            response = after.apply(response, log_hash);
        }
        Poll::Ready(Ok(response))
    }
}

fn refusal(state: &AppState, request: &Request) -> Option<ApiError> {
    request_line::refuse_long_uri(request)
        .or_else(|| request_line::refuse_duplicate_host(request))
        .or_else(|| peer_trust::refuse_untrusted_peer(&state.identity, request))
        .or_else(|| cross_site::refuse_cross_site(state, request))
}
