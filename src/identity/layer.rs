//! The identity as a layer of its own rather than an axum `from_fn`: no boxed future, no boxed
//! `Next` and no second clone of the routes per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Decided, decide};
use crate::error::ApiError;
use crate::state::AppState;

/// Every user route's layer: decides the request's identity before its handler runs.
#[derive(Clone)]
pub struct Resolve {
    state: AppState,
}

impl Resolve {
    pub fn new(state: AppState) -> Resolve {
        Resolve { state }
    }
}

impl<S> Layer<S> for Resolve {
    type Service = Resolved<S>;

    fn layer(&self, inner: S) -> Resolved<S> {
        Resolved {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Resolved<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Resolved<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match decide(&self.state, &mut request) {
            Ok(decided) => Answer::Handled {
                handler: self.inner.call(request),
                decided: Some(decided),
            },
            Err(refusal) => Answer::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

pin_project! {
    /// The handler's response with what the identity adds to it, or the refusal.
    #[project = AnswerProj]
    pub enum Answer<F> {
        Handled {
            #[pin]
            handler: F,
            decided: Option<Decided>,
        },
        Refused {
            refusal: Option<ApiError>,
        },
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Handled { handler, decided } => {
                let response = ready!(handler.poll(cx))?;
                Poll::Ready(Ok(match decided.take() {
                    Some(decided) => decided.apply(response),
                    None => response,
                }))
            }
            AnswerProj::Refused { refusal } => Poll::Ready(Ok(refusal
                .take()
                .map(IntoResponse::into_response)
                .unwrap_or_default())),
        }
    }
}
