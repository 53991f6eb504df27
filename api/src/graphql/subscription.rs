//! Subscriptions. Every stream reads from the event bus only (so a replica sees what any
//! other replica published through Redis) and filters server-side by its arguments. Payloads
//! are the same object types queries return.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use async_graphql::{Context, Subscription};
use futures::{Stream, StreamExt};
use orrery_entity::{config_entry, source};
use orrery_indexer::bus::{topics, BusEvent};
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

/// Events of one topic from the bus, decoded with `decode`; lagging subscribers skip ahead
/// (the database keeps everything they missed).
pub(crate) fn bus_stream<T, F>(
    ctx: &Context<'_>,
    topic: &'static str,
    mut decode: F,
) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnMut(BusEvent) -> Option<T> + Send + 'static,
{
    let rx = ctx.data_unchecked::<AppState>().bus.subscribe();
    // Over a subscription socket: commit times for `orrery_subscription_delivery_seconds`.
    let stamps = ctx.data_opt::<crate::ws::EventStamps>().cloned();
    let stream = BroadcastStream::new(rx).filter_map(move |msg| {
        let out = match msg {
            Ok(event) if event.topic == topic => {
                let at = event.at;
                let out = decode(event);
                if let (Some(s), Some(_)) = (&stamps, &out) {
                    s.record(at);
                }
                out
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(topic, skipped = n, "subscriber lagged; events skipped");
                None
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

#[Subscription]
impl CoreSubscription {
    /// A source's sync state changed (new height, status or error).
    async fn source_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this source id; all sources when omitted.")] source: Option<String>,
    ) -> impl Stream<Item = Chain> {
        bus_stream(ctx, topics::SOURCE_UPDATED, move |e| {
            let row: source::Model = serde_json::from_value(e.payload).ok()?;
            match &source {
                Some(id) if *id != row.id => None,
                _ => Some(Chain::from(row)),
            }
        })
    }

    /// A database-backed setting was changed (by a mutation or `orrery config set`).
    async fn config_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only keys starting with this prefix.")] prefix: Option<String>,
    ) -> impl Stream<Item = ConfigEntry> {
        bus_stream(ctx, topics::CONFIG_UPDATED, move |e| {
            let row: config_entry::Model = serde_json::from_value(e.payload).ok()?;
            match &prefix {
                Some(p) if !row.key.starts_with(p.as_str()) => None,
                _ => Some(ConfigEntry::from(row)),
            }
        })
    }
}
