//! Every route's handler, wrapped: what the front door needs from the routing (the matched
//! route, for the access log) and, on user routes, the identity. A wrapper of the handler
//! rather than a layer: each axum layer boxes the route again, and a request then clones every
//! boxed level below it and boxes a future per level.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;

use crate::error::ApiError;
use crate::identity::{Decided, decide};
use crate::state::AppState;

thread_local! {
    /// The matched route of the response being returned up this thread's poll, as
    /// [`crate::identity::take_log_hash`] keeps its identity: the front door sits outside the
    /// router, so the route reaches it this way.
    static ROUTE: Cell<Option<MatchedPath>> = const { Cell::new(None) };
}

/// Forgets a route left by a response that did not reach the front door in its poll.
pub fn forget_route() {
    ROUTE.set(None);
}

/// The route of the response that just became ready on this thread, if it had one.
pub fn take_route() -> Option<MatchedPath> {
    ROUTE.take()
}

/// For a response made before the request reached its handler.
pub fn record_route(route: Option<MatchedPath>) {
    ROUTE.set(route);
}

/// The front door's own answer to a request (a refusal or a preflight), carried to the
/// request's handler wrapper, which answers with it in place of the handler: the request is
/// still routed, for its route in the log and for what the router adds to every response.
#[derive(Clone)]
pub struct Answered(Arc<Mutex<Option<Response>>>);

impl Answered {
    pub fn new(response: Response) -> Answered {
        Answered(Arc::new(Mutex::new(Some(response))))
    }

    /// The answer, if `request` has one.
    pub fn of(request: &Request) -> Option<Response> {
        let answered = request.extensions().get::<Answered>()?;
        let taken = answered
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Some(taken.unwrap_or_default())
    }
}

/// A handler as [`user`] or [`open`] wrap it.
#[derive(Clone)]
pub struct Routed<H> {
    handler: H,
    user: bool,
}

/// A route that acts for a user: the request's identity is decided before the handler runs
/// (and before its extractors), and the response gets what the identity adds to it.
pub fn user<H>(handler: H) -> Routed<H> {
    Routed {
        handler,
        user: true,
    }
}

/// A route without identity (health, metrics, static files, the files passthrough).
pub fn open<H>(handler: H) -> Routed<H> {
    Routed {
        handler,
        user: false,
    }
}

impl<T, H> Handler<T, AppState> for Routed<H>
where
    H: Handler<T, AppState>,
{
    type Future = Answer<H::Future>;

    fn call(self, mut request: Request, state: AppState) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        if let Some(answer) = Answered::of(&request) {
            return Answer::Early {
                route,
                response: Some(answer),
            };
        }
        let decided = if self.user {
            match decide(&state, &mut request) {
                Ok(decided) => Some(decided),
                Err(refusal) => return Answer::refused(route, refusal),
            }
        } else {
            None
        };
        Answer::Handled {
            handler: self.handler.call(request, state),
            route,
            decided,
        }
    }
}

pin_project! {
    /// The handler's response with what the identity adds to it, or an earlier answer.
    #[project = AnswerProj]
    pub enum Answer<F> {
        Handled {
            #[pin]
            handler: F,
            route: Option<MatchedPath>,
            decided: Option<Decided>,
        },
        Early {
            route: Option<MatchedPath>,
            response: Option<Response>,
        },
    }
}

impl<F> Answer<F> {
    fn refused(route: Option<MatchedPath>, refusal: ApiError) -> Answer<F> {
        Answer::Early {
            route,
            response: Some(refusal.into_response()),
        }
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Response>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.project() {
            AnswerProj::Handled {
                handler,
                route,
                decided,
            } => {
                let response = ready!(handler.poll(cx));
                ROUTE.set(route.take());
                Poll::Ready(match decided.take() {
                    Some(decided) => decided.apply(response),
                    None => response,
                })
            }
            AnswerProj::Early { route, response } => {
                ROUTE.set(route.take());
                Poll::Ready(response.take().unwrap_or_default())
            }
        }
    }
}
