//! [`ResponseFuture`]: decide, call the inner service, settle, answer.
//!
//! An explicit state machine:
//!
//! ```text
//! Deciding --allowed--> Calling --response--> Settling --> Done
//!    |  \--denied---------------------------> Settling --> Done   (the denial, no call)
//!    \----meter error: 4xx/503 -------------------------> Done   (or Calling, uncharged, when failing open)
//! ```
//!
//! A future dropped before it is done (the client went away, an outer timeout fired) does
//! not lose its decision: what is left (finishing the decision, settling it as not
//! answered) is handed to a detached task on the current tokio runtime. An allowed call's
//! ticket is owned by a guard from before the inner service's `call`, so a `call` that
//! panics is settled the same way.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use metering_core::Outcome;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::config::Flags;
use crate::headers::RateLimitHeaders;
use crate::meter::{Decided, Meter};
use crate::response::{self, Failure};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The meter's decision, with the meter handed back for settling.
pub(crate) type Decide<M> = BoxFuture<(M, Result<<M as Meter>::Pending, metering_core::Error>)>;

/// What the future resolves to, before the body is wrapped.
enum Answer<R, E> {
    /// The inner service's answer.
    Inner(Result<R, E>),
    /// The layer's own answer.
    Own(Response<Bytes>),
}

pin_project! {
    /// The response future of [`Metering`](crate::Metering).
    pub struct ResponseFuture<S, B, M>
    where
        S: Service<Request<B>>,
        M: Meter,
    {
        #[pin]
        state: State<S, B, M>,
        flags: Flags,
    }

    impl<S, B, M> PinnedDrop for ResponseFuture<S, B, M>
    where
        S: Service<Request<B>>,
        M: Meter,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let left: Option<BoxFuture<()>> = match this.state.project_replace(State::Done { answer: None }) {
                StateOwned::Deciding { decide, .. } => Some(Box::pin(async move {
                    if let (meter, Ok(pending)) = decide.await {
                        meter.settle(pending, Outcome { status: None, charge: false }).await;
                    }
                })),
                // A call in progress settles through its guard, dropped here.
                StateOwned::Settling { settle, .. } => Some(settle),
                _ => None,
            };
            if let Some(work) = left {
                finish_detached(work);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<S, B, M>
    where
        S: Service<Request<B>>,
        M: Meter,
    {
        Deciding {
            decide: Decide<M>,
            inner: S,
            request: Request<B>,
        },
        Calling {
            #[pin]
            future: S::Future,
            settle: Option<Unsettled<M>>,
            headers: RateLimitHeaders,
        },
        Settling {
            settle: BoxFuture<()>,
            answer: Option<Answer<S::Response, S::Error>>,
        },
        Done {
            answer: Option<Answer<S::Response, S::Error>>,
        },
    }
}

impl<S, B, M> ResponseFuture<S, B, M>
where
    S: Service<Request<B>>,
    M: Meter,
{
    /// Waits for `decide`, then calls `inner` (already polled ready) with `request`.
    pub(crate) fn deciding(decide: Decide<M>, inner: S, request: Request<B>, flags: Flags) -> Self {
        ResponseFuture { state: State::Deciding { decide, inner, request }, flags }
    }

    /// Answers `response` without deciding or calling anything.
    pub(crate) fn answered(response: Response<Bytes>, flags: Flags) -> Self {
        ResponseFuture { state: State::Done { answer: Some(Answer::Own(response)) }, flags }
    }
}

impl<S, B, M, ResBody> Future for ResponseFuture<S, B, M>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    M: Meter,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding { decide, .. } => {
                    let (meter, decided) = ready!(decide.as_mut().poll(cx));
                    let StateOwned::Deciding { mut inner, request, .. } =
                        this.state.as_mut().project_replace(State::Done { answer: None })
                    else {
                        unreachable!("the state was Deciding")
                    };
                    let next = match decided {
                        Ok(pending) => {
                            let decision = pending.decision();
                            let headers = RateLimitHeaders::new(decision);
                            if decision.allowed {
                                // Owned by the guard before `call`, which may panic.
                                let unsettled = Unsettled::new(meter, pending, this.flags.charge_server_errors);
                                let future = inner.call(request);
                                State::Calling { future, settle: Some(unsettled), headers }
                            } else {
                                let mut denial = response::denial(decision);
                                headers.write(denial.headers_mut());
                                let outcome = Outcome { status: Some(denial.status().as_u16()), charge: false };
                                let settle = Box::pin(async move { meter.settle(pending, outcome).await });
                                State::Settling { settle, answer: Some(Answer::Own(denial)) }
                            }
                        }
                        Err(e) => match response::failure(&e) {
                            Failure::Unavailable if this.flags.fail_open => {
                                tracing::warn!("metering unavailable: the call goes through uncharged");
                                let future = inner.call(request);
                                State::Calling { future, settle: None, headers: RateLimitHeaders::default() }
                            }
                            Failure::Unavailable => State::Done { answer: Some(Answer::Own(response::unavailable())) },
                            Failure::Refuse(answer) => State::Done { answer: Some(Answer::Own(answer)) },
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { future, settle, headers } => {
                    let result = ready!(future.poll(cx));
                    let headers = mem::take(headers);
                    let settle = settle.take();
                    let status = match &result {
                        Ok(response) => Some(response.status()),
                        Err(_) => None,
                    };
                    let result = result.map(|mut response| {
                        headers.write(response.headers_mut());
                        response
                    });
                    let answer = Some(Answer::Inner(result));
                    let next = match settle {
                        Some(unsettled) => {
                            let answered = status.is_some_and(|s| !s.is_server_error());
                            // The route has no such method: nothing was served.
                            let refused = status == Some(http::StatusCode::METHOD_NOT_ALLOWED);
                            let charge = (answered || this.flags.charge_server_errors) && !refused;
                            let outcome = Outcome { status: status.map(|s| s.as_u16()), charge };
                            State::Settling { settle: unsettled.settle(outcome), answer }
                        }
                        None => State::Done { answer },
                    };
                    this.state.set(next);
                }
                StateProj::Settling { settle, answer } => {
                    ready!(settle.as_mut().poll(cx));
                    let answer = answer.take();
                    this.state.set(State::Done { answer });
                }
                StateProj::Done { answer } => {
                    return Poll::Ready(match answer.take() {
                        Some(Answer::Inner(result)) => result.map(|r| r.map(ResponseBody::inner)),
                        Some(Answer::Own(r)) => Ok(r.map(ResponseBody::own)),
                        None => panic!("`ResponseFuture` polled after it completed"),
                    });
                }
            }
        }
    }
}

impl<S, B, M> fmt::Debug for ResponseFuture<S, B, M>
where
    S: Service<Request<B>>,
    M: Meter,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Deciding { .. } => "Deciding",
            State::Calling { .. } => "Calling",
            State::Settling { .. } => "Settling",
            State::Done { .. } => "Done",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish_non_exhaustive()
    }
}

/// An allowed call on its way through the inner service, not settled yet.
///
/// Whatever way the call ends, it is settled once: by [`settle`](Self::settle) with how
/// it ended, or, dropped unsettled (the future abandoned, or the inner service's `call`
/// panicking before it returned a future), from a detached task as not answered.
struct Unsettled<M: Meter> {
    held: Option<(M, M::Pending)>,
    /// Whether a call that ends without an answer stays charged.
    charge_unanswered: bool,
}

impl<M: Meter> Unsettled<M> {
    fn new(meter: M, pending: M::Pending, charge_unanswered: bool) -> Self {
        Unsettled { held: Some((meter, pending)), charge_unanswered }
    }

    /// The settling of the call as it ended.
    fn settle(mut self, outcome: Outcome) -> BoxFuture<()> {
        let held = self.held.take();
        Box::pin(async move {
            if let Some((meter, pending)) = held {
                meter.settle(pending, outcome).await;
            }
        })
    }
}

impl<M: Meter> Drop for Unsettled<M> {
    fn drop(&mut self) {
        if let Some((meter, pending)) = self.held.take() {
            let outcome = Outcome { status: None, charge: self.charge_unanswered };
            finish_detached(Box::pin(async move { meter.settle(pending, outcome).await }));
        }
    }
}

/// Runs what an abandoned future left to do on the current runtime.
fn finish_detached(work: BoxFuture<()>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(work)),
        Err(_) => tracing::warn!("a metered call was abandoned outside a tokio runtime; it is not settled"),
    }
}
