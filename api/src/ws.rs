//! The subscription transport: drives one graphql-ws (or legacy subscriptions-transport-ws)
//! connection over an axum WebSocket.
//!
//! async-graphql's protocol machine ([`async_graphql::http::WebSocket`]) turns client
//! messages into outgoing frames; this module owns what happens between those frames and
//! the socket:
//! - frames wait in a bounded per-connection queue ([`WsLimits::max_queued_frames`]); a
//!   client that does not read fast enough fills it and is closed with code 1008 and a reason
//!   saying so, instead of holding memory without bound (the database keeps everything it
//!   missed);
//! - the time from an event's commit (its bus timestamp) to its frame being written to the
//!   socket is recorded in `orrery_subscription_delivery_seconds`;
//! - small WebSocket buffers ([`upgrade_config`]): the library defaults (128 KiB read buffer
//!   per connection) cost most of a connection's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextSubscribe,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor, Request, Response, ServerResult};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use orrery_indexer::metrics::Metrics;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::ws_fanout::Join;

/// Close code for a client closed because it reads too slowly (RFC 6455: policy violation).
pub const SLOW_CLIENT_CLOSE_CODE: u16 = 1008;

/// How long a close frame may take to reach a client that stopped reading before the
/// connection is dropped without it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    /// Frames that may wait for the socket before the client counts as too slow.
    pub max_queued_frames: usize,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
}

/// Buffer sizes of every subscription socket: a 4 KiB read buffer (client messages are
/// small), frames written out as they come, and at most 1 MiB held in the write buffer.
pub fn upgrade_config(upgrade: WebSocketUpgrade, limits: WsLimits) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
}

/// Commit timestamps of the events behind this connection's frames, oldest first: one
/// entry per subscription response, `None` for responses not caused by a bus event.
#[derive(Clone, Default)]
pub struct DeliveryClock(Arc<Mutex<VecDeque<Option<DateTime<Utc>>>>>);

impl DeliveryClock {
    /// Appends the commit time behind the next response (`None`: not caused by an event).
    pub(crate) fn push_stamp(&self, at: Option<DateTime<Utc>>) {
        lock(&self.0).push_back(at);
    }

    /// The commit time behind the oldest response not yet accounted for.
    pub(crate) fn pop_stamp(&self) -> Option<DateTime<Utc>> {
        lock(&self.0).pop_front().flatten()
    }
}

/// Per-subscription: commit timestamps of the bus events its stream yielded and that have
/// not become a response yet. Bus streams push ([`EventStamps::record`]); the
/// [`DeliveryTiming`] extension moves each to the connection's [`DeliveryClock`] when the
/// response leaves the stream.
#[derive(Clone, Default)]
pub struct EventStamps(Arc<Mutex<VecDeque<DateTime<Utc>>>>);

impl EventStamps {
    /// Records that the stream is yielding an item caused by an event committed at `at`.
    pub fn record(&self, at: DateTime<Utc>) {
        lock(&self.0).push_back(at);
    }
}

/// Extension that carries commit timestamps from bus streams to the connection.
pub struct DeliveryTiming;

impl ExtensionFactory for DeliveryTiming {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DeliveryTimingExt {
            stamps: Arc::new(Mutex::new(None)),
        })
    }
}

struct DeliveryTimingExt {
    /// Set by `prepare_request`, which runs inside the stream, after `subscribe` wrapped it.
    stamps: Arc<Mutex<Option<EventStamps>>>,
}

#[async_trait::async_trait]
impl Extension for DeliveryTimingExt {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Only requests arriving over a subscription socket carry a clock.
        if ctx.data_opt::<DeliveryClock>().is_some() {
            let stamps = EventStamps::default();
            *lock(&self.stamps) = Some(stamps.clone());
            request = request.data(stamps);
        }
        next.run(ctx, request).await
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let stream = next.run(ctx, stream);
        let Some(clock) = ctx.data_opt::<DeliveryClock>().cloned() else {
            return stream;
        };
        let slot = self.stamps.clone();
        stream
            .map(move |response| {
                let at = lock(&slot).as_ref().and_then(|s| lock(&s.0).pop_front());
                clock.push_stamp(at);
                response
            })
            .boxed()
    }
}

/// The data behind these locks stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One outgoing frame, and the commit time behind it when it carries a subscription
/// response.
struct Frame {
    body: Body,
    stamp: Stamp,
}

/// What a frame holds: a message, or a shared execution's response not yet framed (the
/// writer puts the subscription id around it, so the execution's task only queues it).
enum Body {
    Message(Message),
    Next {
        id_json: Arc<str>,
        item: crate::ws_fanout::Item,
    },
}

impl Body {
    fn into_message(self) -> Message {
        match self {
            Body::Message(m) => m,
            Body::Next { id_json, item } => Message::Text(
                format!(
                    r#"{{"type":"next","id":{id_json},"payload":{}}}"#,
                    item.encoded
                )
                .into(),
            ),
        }
    }
}

impl Frame {
    fn text(text: String) -> Self {
        Frame {
            body: Body::Message(Message::Text(text.into())),
            stamp: Stamp::None,
        }
    }
}

/// Where a frame's commit time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// Not a subscription response.
    None,
    /// A response of async-graphql's protocol machine: the connection's clock has it.
    Clock,
    /// A pre-encoded response of a shared execution: known.
    At(Option<DateTime<Utc>>),
}

fn frame(msg: WsMessage) -> Frame {
    match msg {
        WsMessage::Text(text) => {
            // async-graphql writes the `type` tag first.
            let is_data =
                text.starts_with(r#"{"type":"next""#) || text.starts_with(r#"{"type":"data""#);
            Frame {
                body: Body::Message(Message::Text(text.into())),
                stamp: if is_data { Stamp::Clock } else { Stamp::None },
            }
        }
        WsMessage::Close(code, reason) => Frame {
            body: Body::Message(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))),
            stamp: Stamp::None,
        },
    }
}

/// The bounded per-connection frame queue; the first frame that does not fit marks the
/// client too slow (its writer then closes it with [`SLOW_CLIENT_CLOSE_CODE`]).
struct FrameQueue {
    tx: mpsc::Sender<Frame>,
    slow: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    capacity: usize,
}

impl FrameQueue {
    /// Queues `f`; false once the client is too slow or the socket is gone.
    fn push(&self, f: Frame) -> bool {
        match self.tx.try_send(f) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(s) = lock(&self.slow).take() {
                    Metrics::global().subscription_slow_closes.inc();
                    tracing::warn!(
                        queued = self.capacity,
                        "closing a subscription client that does not read its frames"
                    );
                    let _ = s.send(());
                }
                false
            }
            // The writer stopped: the socket is gone.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Subscriptions of one graphql-transport-ws connection served from shared executions
/// ([`crate::ws_fanout`]) without async-graphql's protocol machine: each response was
/// serialized once for every client; the execution queues it straight into the
/// connection's frame queue, and the writer puts the subscription id around it.
struct Direct {
    join: Arc<dyn Join>,
    queue: Arc<FrameQueue>,
    /// Set once the connection is acknowledged (subscriptions before that go to the
    /// protocol machine, which refuses them).
    acked: std::sync::atomic::AtomicBool,
    /// The connection's caller, from `connection_init`.
    caller: Mutex<Option<Caller>>,
    /// Subscription id -> its place in a shared execution (dropping it detaches).
    attached: Mutex<std::collections::HashMap<String, crate::ws_fanout::Attached>>,
}

/// One subscription of a connection, as a shared execution's direct subscriber.
struct DirectSubscription {
    id_json: Arc<str>,
    /// Weak: a connection that is gone is detached at the next response.
    queue: std::sync::Weak<FrameQueue>,
}

impl crate::ws_fanout::Subscriber for DirectSubscription {
    fn deliver(&self, item: Option<&crate::ws_fanout::Item>) -> bool {
        let Some(queue) = self.queue.upgrade() else {
            return false;
        };
        match item {
            Some(item) => queue.push(Frame {
                body: Body::Next {
                    id_json: self.id_json.clone(),
                    item: item.clone(),
                },
                stamp: Stamp::At(item.at),
            }),
            None => queue.push(Frame::text(format!(
                r#"{{"type":"complete","id":{}}}"#,
                self.id_json
            ))),
        }
    }
}

/// A client message this transport looks at (the rest goes to the protocol machine as is).
#[derive(serde::Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    payload: Option<serde_json::Value>,
}

impl Direct {
    /// Handles `text` if it subscribes to (or completes) a shared execution; returns it
    /// otherwise.
    fn intercept(&self, text: Vec<u8>) -> Option<Vec<u8>> {
        use std::sync::atomic::Ordering;
        if !self.acked.load(Ordering::Acquire) {
            return Some(text);
        }
        let Ok(msg) = serde_json::from_slice::<ClientFrame>(&text) else {
            return Some(text);
        };
        match (msg.kind.as_str(), msg.id) {
            ("subscribe", Some(id)) => {
                if lock(&self.attached).contains_key(&id) {
                    // The protocol machine answers a repeated id.
                    return Some(text);
                }
                let Some(request) = msg
                    .payload
                    .and_then(|p| serde_json::from_value::<Request>(p).ok())
                else {
                    return Some(text);
                };
                let caller = lock(&self.caller).clone();
                let Ok(id_json) = serde_json::to_string(&id) else {
                    return Some(text);
                };
                let subscriber = Arc::new(DirectSubscription {
                    id_json: id_json.into(),
                    queue: Arc::downgrade(&self.queue),
                });
                let Some(attached) = self.join.attach(request, caller, subscriber) else {
                    return Some(text);
                };
                lock(&self.attached).insert(id, attached);
                None
            }
            ("complete", Some(id)) => {
                // Dropping the place detaches it; nothing more is written for it.
                let found = lock(&self.attached).remove(&id);
                match found {
                    Some(_) => None,
                    None => Some(text),
                }
            }
            _ => Some(text),
        }
    }
}

/// Serves one connection until either side closes. `init` is the `connection_init` hook;
/// its data, plus a [`DeliveryClock`], is every subscription's session data. With `shared`,
/// graphql-transport-ws subscriptions that can share an execution are served from it with
/// pre-encoded frames ([`Direct`]).
pub async fn serve<E, F, Fut>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    limits: WsLimits,
    shared: Option<Arc<dyn Join>>,
    init: F,
) where
    E: Executor,
    F: FnOnce(serde_json::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    let capacity = limits.max_queued_frames.max(1);
    let (tx, rx) = mpsc::channel::<Frame>(capacity);
    let (slow_tx, slow_rx) = tokio::sync::oneshot::channel::<()>();
    let queue = Arc::new(FrameQueue {
        tx,
        slow: Mutex::new(Some(slow_tx)),
        capacity,
    });
    let direct = shared
        .filter(|_| protocol == WebSocketProtocols::GraphQLWS)
        .map(|join| {
            Arc::new(Direct {
                join,
                queue: queue.clone(),
                acked: Default::default(),
                caller: Mutex::new(None),
                attached: Mutex::new(Default::default()),
            })
        });

    let (sink, stream) = socket.split();
    let seen = direct.clone();
    let input = stream
        .take_while(|res| futures::future::ready(res.is_ok()))
        .filter_map(move |msg| {
            let data = match msg {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data().to_vec()),
                _ => None,
            };
            let data = match (&seen, data) {
                (Some(d), Some(text)) => d.intercept(text),
                (_, data) => data,
            };
            futures::future::ready(data)
        });
    let clock = DeliveryClock::default();
    let mut connection = Data::default();
    connection.insert(clock.clone());
    let keep = direct.clone();
    let init = move |payload| async move {
        let data = init(payload).await?;
        if let Some(d) = &keep {
            *lock(&d.caller) = data
                .get(&std::any::TypeId::of::<Caller>())
                .and_then(|c| c.downcast_ref::<Caller>())
                .cloned();
        }
        Ok(data)
    };
    let mut outgoing = Box::pin(
        async_graphql::http::WebSocket::new(executor, input, protocol)
            .connection_data(connection)
            .on_connection_init(init),
    );

    let writer = tokio::spawn(write_frames(sink, rx, slow_rx, clock, capacity));

    while let Some(msg) = outgoing.next().await {
        let f = frame(msg);
        let ack = matches!(&f.body, Body::Message(Message::Text(t)) if t.as_str().starts_with(r#"{"type":"connection_ack""#));
        if !queue.push(f) {
            break;
        }
        if ack {
            if let Some(d) = &direct {
                d.acked.store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }
    // Ends the subscriptions (and their bus receivers) before waiting for the writer.
    drop(outgoing);
    drop(direct);
    drop(queue);
    let _ = writer.await;
}

/// Writes queued frames to the socket in order, recording delivery times; on `slow`,
/// drops what is queued and closes with [`SLOW_CLIENT_CLOSE_CODE`] and a reason.
async fn write_frames(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    mut slow: tokio::sync::oneshot::Receiver<()>,
    clock: DeliveryClock,
    capacity: usize,
) {
    let delivery = &Metrics::global().subscription_delivery;
    // `slow` resolves Ok when the client is too slow, Err when the protocol side is gone.
    loop {
        let next = tokio::select! {
            biased;
            r = &mut slow => match r {
                Ok(()) => break,
                Err(_) => return,
            },
            f = rx.recv() => f,
        };
        let Some(f) = next else {
            // The protocol side ended: everything queued is written; close normally.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
            return;
        };
        let message = f.body.into_message();
        let closing = matches!(message, Message::Close(_));
        let sent = tokio::select! {
            biased;
            r = &mut slow => match r {
                Ok(()) => break,
                Err(_) => return,
            },
            r = sink.send(message) => r,
        };
        if sent.is_err() {
            return;
        }
        let at = match f.stamp {
            Stamp::None => None,
            Stamp::Clock => clock.pop_stamp(),
            Stamp::At(at) => at,
        };
        if let Some(at) = at {
            let secs = (Utc::now() - at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            delivery.observe(secs);
        }
        if closing {
            return;
        }
    }
    // Too slow: the queue is dropped; the close frame follows whatever the socket already
    // holds, and the connection goes when the client reads it or after CLOSE_TIMEOUT.
    drop(rx);
    let reason = format!(
        "subscriber too slow: {capacity} frames queued unread; reconnect and re-read from the API"
    );
    let close = Message::Close(Some(CloseFrame {
        code: SLOW_CLIENT_CLOSE_CODE,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if sink.send(close).await.is_ok() {
            let _ = sink.close().await;
        }
    })
    .await;
}

/// The subprotocol a client asked for (`graphql-transport-ws` or the legacy `graphql-ws`),
/// if it asked for one this server speaks.
pub fn protocol(headers: &axum::http::HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().parse().ok())
}

/// Upgrades `upgrade` and serves it with [`serve`] (a convenience for the router).
pub fn respond<E, F, Fut>(
    upgrade: WebSocketUpgrade,
    executor: E,
    protocol: WebSocketProtocols,
    limits: WsLimits,
    shared: Option<Arc<dyn Join>>,
    init: F,
) -> axum::response::Response
where
    E: Executor,
    F: FnOnce(serde_json::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = async_graphql::Result<Data>> + Send + 'static,
{
    upgrade_config(upgrade, limits)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(socket, executor, protocol, limits, shared, init))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod direct {
        use tokio::sync::broadcast;

        use super::*;
        use crate::ws_fanout::Fanout;

        fn direct(tx: broadcast::Sender<i32>) -> (Direct, mpsc::Receiver<Frame>) {
            let schema = crate::ws_fanout::test_schema::schema(tx);
            let (ftx, frx) = mpsc::channel(16);
            let queue = Arc::new(FrameQueue {
                tx: ftx,
                slow: Mutex::new(None),
                capacity: 16,
            });
            let d = Direct {
                join: Arc::new(Fanout::new(schema)),
                queue,
                acked: Default::default(),
                caller: Mutex::new(None),
                attached: Mutex::new(Default::default()),
            };
            (d, frx)
        }

        fn text(f: Frame) -> String {
            match f.body.into_message() {
                Message::Text(t) => t.to_string(),
                other => panic!("not text: {other:?}"),
            }
        }

        #[tokio::test]
        async fn shared_subscriptions_get_pre_encoded_frames_after_the_ack() {
            let (tx, _) = broadcast::channel(16);
            let (d, mut frames) = direct(tx.clone());
            let sub = |id: &str, q: &str| {
                serde_json::to_vec(
                    &serde_json::json!({"type": "subscribe", "id": id, "payload": {"query": q}}),
                )
                .unwrap()
            };
            // Before the ack, everything goes to the protocol machine.
            assert!(d.intercept(sub("1", "subscription { ticks }")).is_some());
            d.acked.store(true, std::sync::atomic::Ordering::Release);
            // Queries and unparsable text too.
            assert!(d.intercept(sub("2", "{ ok }")).is_some());
            assert!(d.intercept(b"not json".to_vec()).is_some());
            // A subscription is served here.
            assert!(d.intercept(sub("7", "subscription { ticks }")).is_none());
            // A repeated id is left to the machine.
            assert!(d.intercept(sub("7", "subscription { ticks }")).is_some());
            while tx.receiver_count() == 0 {
                tokio::task::yield_now().await;
            }
            tx.send(5).unwrap();
            let f = frames.recv().await.unwrap();
            assert!(matches!(f.stamp, Stamp::At(_)), "{:?}", f.stamp);
            assert_eq!(
                text(f),
                r#"{"type":"next","id":"7","payload":{"data":{"ticks":5}}}"#
            );
            // `complete` stops it: nothing more is written for it.
            let done =
                serde_json::to_vec(&serde_json::json!({"type": "complete", "id": "7"})).unwrap();
            assert!(d.intercept(done.clone()).is_none());
            assert!(d.intercept(done).is_some(), "unknown id: the machine's");
            tokio::task::yield_now().await;
            let _ = tx.send(6);
            let more = tokio::time::timeout(Duration::from_millis(200), frames.recv()).await;
            assert!(
                more.is_err(),
                "a frame after complete: {:?}",
                more.map(|f| f.map(text))
            );
        }
    }

    #[test]
    fn only_subscription_responses_count_as_data_frames() {
        for (text, data) in [
            (r#"{"type":"next","id":"1","payload":{"data":{}}}"#, true),
            (r#"{"type":"data","id":"1","payload":{"data":{}}}"#, true),
            (r#"{"type":"connection_ack"}"#, false),
            (r#"{"type":"complete","id":"1"}"#, false),
            (r#"{"type":"pong"}"#, false),
        ] {
            let stamp = frame(WsMessage::Text(text.into())).stamp;
            assert_eq!(stamp == Stamp::Clock, data, "{text}");
        }
        let close = frame(WsMessage::Close(4401, "Unauthorized".into()));
        assert_eq!(close.stamp, Stamp::None);
        assert!(matches!(close.body, Body::Message(Message::Close(Some(f))) if f.code == 4401));
    }

    #[test]
    fn the_subprotocol_comes_from_the_header() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(protocol(&h), None);
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "foo, graphql-transport-ws".parse().unwrap(),
        );
        assert_eq!(protocol(&h), Some(WebSocketProtocols::GraphQLWS));
        h.insert(
            axum::http::header::SEC_WEBSOCKET_PROTOCOL,
            "graphql-ws".parse().unwrap(),
        );
        assert_eq!(
            protocol(&h),
            Some(WebSocketProtocols::SubscriptionsTransportWS)
        );
    }

    #[test]
    fn the_clock_pairs_commit_times_with_frames_in_order() {
        let c = DeliveryClock::default();
        let t = Utc::now();
        c.push_stamp(Some(t));
        c.push_stamp(None);
        assert_eq!(c.pop_stamp(), Some(t));
        assert_eq!(c.pop_stamp(), None);
        assert_eq!(c.pop_stamp(), None, "empty");
    }
}
