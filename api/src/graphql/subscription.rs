//! Subscriptions. Every stream reads from the event bus only (so a replica sees what any
//! other replica published through Redis) and filters server-side by its arguments. Payloads
//! are the same object types queries return.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use async_graphql::{Context, ErrorExtensions, Subscription};
use futures::{Stream, StreamExt};
use orrery_indexer::bus::{topics, BusEvent, Payload};
use orrery_indexer::metrics::Metrics;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::types::{Chain, ConfigEntry};
use crate::state::AppState;

/// Subscriptions to sync state and config changes.
#[derive(Default)]
pub struct CoreSubscription;

/// Keeps `orrery_subscriptions_open` right for as long as a stream lives.
struct Tracked<S> {
    inner: S,
    counted: bool,
}

impl<S> Tracked<S> {
    fn new(inner: S, counted: bool) -> Self {
        if counted {
            Metrics::global().subscriptions_open.inc();
        }
        Self { inner, counted }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if self.counted {
            Metrics::global().subscriptions_open.dec();
        }
    }
}

/// `stream`, counted in `orrery_subscriptions_open` while it lives (one client of a shared
/// execution, see [`crate::ws_fanout`]).
pub(crate) fn track<S: Stream + Unpin>(stream: S) -> impl Stream<Item = S::Item> {
    Tracked::new(stream, true)
}

impl<S: Stream + Unpin> Stream for Tracked<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Events of one topic from the bus, decoded with `decode`. When the subscriber may have
/// missed events (it lagged behind the fan-out, or the Redis bus was down), the stream
/// yields an error with `extensions.code = "EVENTS_MISSED"` and goes on: the client re-reads
/// what it needs from the matching query (the database has everything).
pub(crate) fn bus_stream<T, F>(
    ctx: &Context<'_>,
    topic: &'static str,
    mut decode: F,
) -> impl Stream<Item = async_graphql::Result<T>>
where
    T: Send + 'static,
    F: FnMut(BusEvent) -> Option<T> + Send + 'static,
{
    let rx = ctx.data_unchecked::<AppState>().bus.subscribe();
    // Over a subscription socket: commit times for `orrery_subscription_delivery_seconds`.
    let stamps = ctx.data_opt::<crate::ws::EventStamps>().cloned();
    let stream = BroadcastStream::new(rx).filter_map(move |msg| {
        let out = match msg {
            Ok(event) if event.topic() == topic => {
                let at = event.at;
                let out = decode(event);
                if let (Some(s), Some(_)) = (&stamps, &out) {
                    s.record(at);
                }
                out.map(Ok)
            }
            Ok(BusEvent {
                payload: Payload::EventsMissed(m),
                ..
            }) => Some(Err(events_missed(m.reason, None))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(topic, skipped = n, "subscriber lagged; events skipped");
                Some(Err(events_missed(
                    format!("this subscription fell behind and skipped {n} events"),
                    Some(n),
                )))
            }
        };
        futures::future::ready(out)
    });
    // A shared execution's stream is not a client: its clients are counted (see `track`).
    let counted = ctx
        .data_opt::<crate::ws_fanout::SharedExecution>()
        .is_none();
    Tracked::new(Box::pin(stream), counted)
}

/// The error a subscriber gets when it may have missed events.
fn events_missed(reason: String, skipped: Option<u64>) -> async_graphql::Error {
    async_graphql::Error::new(format!(
        "events missed: {reason}; re-read current state with the matching query"
    ))
    .extend_with(|_, e| {
        e.set("code", "EVENTS_MISSED");
        if let Some(n) = skipped {
            e.set("skipped", n);
        }
    })
}

#[Subscription]
impl CoreSubscription {
    /// A source's sync state changed (new height, status or error).
    async fn source_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this source id; all sources when omitted.")] source: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<Chain>> {
        bus_stream(ctx, topics::SOURCE_UPDATED, move |e| {
            let Payload::SourceUpdated(row) = e.payload else {
                return None;
            };
            match &source {
                Some(id) if *id != row.id => None,
                _ => Some(Chain::from(orrery_entity::source::Model::from(row))),
            }
        })
    }

    /// A database-backed setting was changed (by a mutation or `orrery config set`).
    async fn config_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only keys starting with this prefix.")] prefix: Option<String>,
    ) -> impl Stream<Item = async_graphql::Result<ConfigEntry>> {
        bus_stream(ctx, topics::CONFIG_UPDATED, move |e| {
            let Payload::ConfigUpdated(row) = e.payload else {
                return None;
            };
            match &prefix {
                Some(p) if !row.key.starts_with(p.as_str()) => None,
                _ => Some(ConfigEntry::from(orrery_entity::config_entry::Model::from(
                    row,
                ))),
            }
        })
    }
}
