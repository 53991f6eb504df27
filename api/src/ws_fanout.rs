//! Shared subscription executions: every client subscribed with the same document, operation
//! name and variables is served by one execution, whose responses are fanned out.
//!
//! Without this, each of 10,000 clients on `blockIndexed` decodes every bus event and
//! resolves the same fields again; with it the work per event is one resolution plus, per
//! client, a copy of the response and its frame. Only subscription operations are shared
//! (a query or mutation sent over the socket runs once per request, as always), and only
//! requests without per-request data or uploads. Subscription resolvers read nothing from
//! the connection (authentication happens at `connection_init`), so sharing cannot leak one
//! client's view to another.
//!
//! A client joining a running execution receives the events from then on, like a fresh one.
//! The execution stops when its last client leaves.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Data, Executor, Request, Response};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use orrery_indexer::metrics::Metrics;

use crate::ws::DeliveryClock;

/// Responses one shared execution may be ahead of its slowest client before that client
/// skips (it is closed by its own bounded queue well before).
const FANOUT_CAPACITY: usize = 1024;

/// Marks the session data of a shared execution (its bus streams are not counted as open
/// subscriptions; its clients are).
pub struct SharedExecution;

type Key = (String, Option<String>, String);

/// One response of a shared execution, as every client receives it.
pub struct Shared {
    /// The response (copied for clients served through async-graphql's protocol machine).
    pub response: Response,
    /// Commit time of the bus event behind it.
    pub at: Option<DateTime<Utc>>,
    /// The response serialized once, for clients whose frames are written directly
    /// ([`crate::ws`]): each frame is this text with the client's id around it.
    pub encoded: Arc<str>,
}

/// One response as the execution hands it out.
pub type Item = Arc<Shared>;

/// A client served without a task of its own: the execution hands it each response (and
/// the end) directly, as the WebSocket transport's pre-encoded path does ([`crate::ws`]).
pub trait Subscriber: Send + Sync {
    /// Takes `item`, or the end of the execution when `None`; false once the client is
    /// gone or too slow, which detaches it.
    fn deliver(&self, item: Option<&Item>) -> bool;
}

/// The direct subscribers of one execution, by token.
type Subscribers = Arc<Mutex<Vec<(u64, Arc<dyn Subscriber>)>>>;

/// A [`Subscriber`]'s place in a shared execution: counted in `orrery_subscriptions_open`,
/// keeping the execution alive; dropping it detaches the subscriber.
pub struct Attached {
    hub: Arc<Hub>,
    token: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        lock(&self.hub.direct).retain(|(t, _)| *t != self.token);
        Metrics::global().subscriptions_open.dec();
    }
}

/// What the WebSocket transport needs of a [`Fanout`]: attaching to a shared execution.
pub trait Join: Send + Sync {
    /// Attaches `subscriber` to the shared execution of `request` (started if none runs),
    /// when it is one that is shared; `caller` authenticates the execution if it starts now.
    fn attach(
        &self,
        request: Request,
        caller: Option<crate::auth::Caller>,
        subscriber: Arc<dyn Subscriber>,
    ) -> Option<Attached>;
}

struct Hub {
    /// Weak: the channel closes (and every client completes) when the execution ends.
    tx: broadcast::WeakSender<Item>,
    /// Clients handed each response directly, in the execution's task.
    direct: Subscribers,
    next_token: std::sync::atomic::AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An executor that shares subscription executions of `inner`.
#[derive(Clone)]
pub struct Fanout<E> {
    inner: E,
    hubs: Arc<Mutex<HashMap<Key, Weak<Hub>>>>,
}

impl<E: Executor> Fanout<E> {
    /// Wraps `inner`.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            hubs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Clients currently served by shared executions, and those executions (for tests).
    pub fn executions(&self) -> usize {
        lock(&self.hubs)
            .values()
            .filter(|h| h.strong_count() > 0)
            .count()
    }
}

/// Whether `request` selects a subscription operation (unparsable text is not shared: the
/// regular path reports the error).
fn is_subscription(request: &Request) -> bool {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let ty = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => op.node.ty,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op.node.ty,
            None => return false,
        },
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => op.node.ty,
            None => return false,
        },
        _ => return false,
    };
    ty == OperationType::Subscription
}

impl<E: Executor> Fanout<E> {
    /// The running execution of `request`, or a new one (authenticated as `caller`).
    fn hub(
        &self,
        request: Request,
        caller: Option<crate::auth::Caller>,
    ) -> (Arc<Hub>, broadcast::Receiver<Item>) {
        let key: Key = (
            request.query.clone(),
            request.operation_name.clone(),
            serde_json::to_string(&request.variables).unwrap_or_default(),
        );
        let mut hubs = lock(&self.hubs);
        hubs.retain(|_, h| h.strong_count() > 0);
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            // An execution that ended (its stream finished) is not joined: a new one starts.
            if let Some(tx) = hub.tx.upgrade() {
                let rx = tx.subscribe();
                return (hub, rx);
            }
        }
        let (tx, rx) = broadcast::channel(FANOUT_CAPACITY);
        let direct: Subscribers = Arc::default();
        let hub = Arc::new(Hub {
            tx: tx.downgrade(),
            direct: direct.clone(),
            next_token: Default::default(),
            task: tokio::spawn(run(self.inner.clone(), request, caller, tx, direct)),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        (hub, rx)
    }
}

/// Whether `request` can be served by a shared execution.
fn shareable(request: &Request) -> bool {
    request.data.is_empty() && request.uploads.is_empty() && is_subscription(request)
}

impl<E: Executor> Join for Fanout<E> {
    fn attach(
        &self,
        request: Request,
        caller: Option<crate::auth::Caller>,
        subscriber: Arc<dyn Subscriber>,
    ) -> Option<Attached> {
        if !shareable(&request) {
            return None;
        }
        // The receiver is not needed: direct subscribers are handed each response.
        let (hub, _rx) = self.hub(request, caller);
        let token = hub
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&hub.direct).push((token, subscriber));
        Metrics::global().subscriptions_open.inc();
        Some(Attached { hub, token })
    }
}

impl<E: Executor> Executor for Fanout<E> {
    async fn execute(&self, request: Request) -> Response {
        self.inner.execute(request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        if !shareable(&request) {
            return self.inner.execute_stream(request, session_data);
        }
        let clock = session_data
            .as_ref()
            .and_then(|d| d.get(&std::any::TypeId::of::<DeliveryClock>()))
            .and_then(|c| c.downcast_ref::<DeliveryClock>())
            .cloned();
        let caller = session_data
            .as_ref()
            .and_then(|d| d.get(&std::any::TypeId::of::<crate::auth::Caller>()))
            .and_then(|c| c.downcast_ref::<crate::auth::Caller>())
            .cloned();
        let (hub, rx) = self.hub(request, caller);
        crate::graphql::subscription::track(Client {
            rx: BroadcastStream::new(rx),
            clock,
            _hub: hub,
        })
        .boxed()
    }
}

/// Runs the one execution and publishes each response, serialized once, with its event's
/// commit time: to the direct subscribers in this task, and on the channel to the rest.
async fn run<E: Executor>(
    inner: E,
    request: Request,
    caller: Option<crate::auth::Caller>,
    tx: broadcast::Sender<Item>,
    direct: Subscribers,
) {
    // The first client's caller, with the execution's own clock.
    let clock = DeliveryClock::default();
    let mut data = Data::default();
    data.insert(clock.clone());
    data.insert(SharedExecution);
    if let Some(c) = caller {
        data.insert(c);
    }
    let mut stream = inner.execute_stream(request, Some(Arc::new(data)));
    while let Some(response) = stream.next().await {
        let at = clock.pop_stamp();
        let encoded: Arc<str> = match serde_json::to_string(&response) {
            Ok(s) => s.into(),
            Err(e) => {
                tracing::error!(error = %e, "a subscription response does not serialize; skipped");
                continue;
            }
        };
        let item = Arc::new(Shared {
            response,
            at,
            encoded,
        });
        lock(&direct).retain(|(_, s)| s.deliver(Some(&item)));
        let _ = tx.send(item);
    }
    // The end: every direct subscriber completes (the channel's close ends the rest).
    let ended: Vec<_> = lock(&direct).drain(..).collect();
    for (_, s) in ended {
        s.deliver(None);
    }
}

/// One client's view of a shared execution.
struct Client {
    rx: BroadcastStream<Item>,
    clock: Option<DeliveryClock>,
    _hub: Arc<Hub>,
}

impl Stream for Client {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        loop {
            match Pin::new(&mut self.rx).poll_next(cx) {
                Poll::Ready(Some(Ok(item))) => {
                    if let Some(c) = &self.clock {
                        c.push_stamp(item.at);
                    }
                    return Poll::Ready(Some(copy(&item.response)));
                }
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => {
                    tracing::warn!(skipped = n, "subscriber lagged; events skipped");
                    continue;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A copy of `r` (async-graphql's `Response` is not `Clone`).
fn copy(r: &Response) -> Response {
    let mut out = Response::new(r.data.clone());
    out.extensions = r.extensions.clone();
    out.cache_control = r.cache_control;
    out.errors = r.errors.clone();
    out.http_headers = r.http_headers.clone();
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small schema for the subscription tests here and in [`crate::ws`]: `ok` and
/// `ticks(times = 1)`, the values sent on the schema's broadcast channel times `times`.
#[cfg(test)]
pub(crate) mod test_schema {
    use async_graphql::{EmptyMutation, Object, Schema, Subscription};
    use futures::{Stream, StreamExt};
    use tokio::sync::broadcast;
    use tokio_stream::wrappers::BroadcastStream;

    pub(crate) struct Q;

    #[Object]
    impl Q {
        async fn ok(&self) -> bool {
            true
        }
    }

    pub(crate) struct S;

    #[Subscription]
    impl S {
        async fn ticks(
            &self,
            ctx: &async_graphql::Context<'_>,
            #[graphql(default = 1)] times: i32,
        ) -> impl Stream<Item = i32> {
            let rx = ctx.data_unchecked::<broadcast::Sender<i32>>().subscribe();
            BroadcastStream::new(rx).filter_map(move |v| async move { v.ok().map(|v| v * times) })
        }
    }

    /// The schema, reading ticks from `tx`.
    pub(crate) fn schema(tx: broadcast::Sender<i32>) -> Schema<Q, EmptyMutation, S> {
        Schema::build(Q, EmptyMutation, S).data(tx).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::test_schema::schema;
    use super::*;

    fn value(r: &Response) -> serde_json::Value {
        r.data.clone().into_json().unwrap()["ticks"].clone()
    }

    #[tokio::test]
    async fn same_subscriptions_share_one_execution_and_all_receive() {
        let (tx, _) = broadcast::channel(16);
        let fanout = Fanout::new(schema(tx.clone()));
        let q = "subscription { ticks(times: 2) }";
        let mut a = fanout.execute_stream(Request::new(q), None);
        let mut b = fanout.execute_stream(Request::new(q), None);
        let mut c = fanout.execute_stream(Request::new("subscription { ticks(times: 3) }"), None);
        assert_eq!(fanout.executions(), 2);
        // Wait until both executions have subscribed to the source.
        while tx.receiver_count() < 2 {
            tokio::task::yield_now().await;
        }
        tx.send(5).unwrap();
        assert_eq!(value(&a.next().await.unwrap()), 10);
        assert_eq!(value(&b.next().await.unwrap()), 10);
        assert_eq!(value(&c.next().await.unwrap()), 15);
        drop(a);
        drop(b);
        assert_eq!(
            fanout.executions(),
            1,
            "the last client stops its execution"
        );
        // Queries over the socket are never shared.
        let mut q1 = fanout.execute_stream(Request::new("{ ok }"), None);
        assert_eq!(fanout.executions(), 1);
        assert!(q1.next().await.unwrap().errors.is_empty());
    }
}
