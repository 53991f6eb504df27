//! The event bus: how committed changes reach GraphQL subscriptions.
//!
//! One trait, two implementations:
//! - [`LocalBus`]: an in-process `tokio::sync::broadcast` channel (the embedded default);
//! - [`RedisBus`]: Redis pub/sub, so every server replica sharing a Redis sees every event.
//!
//! The database is the truth and the bus only a notification: a subscriber that lags and
//! misses messages loses nothing it cannot re-read. Subscribers always read from
//! [`EventBus::subscribe`]; with Redis, even a replica's own events come back through Redis,
//! so one replica and many behave the same.
//!
//! What an event carries is typed: one [`payload::Payload`] variant per topic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::metrics::Metrics;

pub mod payload;

pub use payload::Payload;

/// Capacity of the in-process fan-out channel; slower subscribers skip (and are told).
const FANOUT_CAPACITY: usize = 4096;
/// The Redis channel prefix; the full channel is `orrery:<topic>`.
const REDIS_PREFIX: &str = "orrery:";

/// Topic names: one constant per kind of event.
pub mod topics {
    /// Subscribers may have missed events (the Redis subscription was down, or publishes
    /// failed); payload [`super::payload::EventsMissed`]. Subscriptions turn it into an
    /// `EVENTS_MISSED` error for their clients, who re-read what they need from queries.
    pub const EVENTS_MISSED: &str = "bus.events_missed";
    /// A `source` row changed; payload [`super::payload::SourceRow`].
    pub const SOURCE_UPDATED: &str = "source.updated";
    /// A `config_entry` row changed; payload [`super::payload::ConfigRow`].
    pub const CONFIG_UPDATED: &str = "config.updated";
    /// An EVM contract event was indexed; payload [`super::payload::EvmEventIndexed`].
    pub const EVM_EVENT: &str = "evm.event";
    /// EVM blocks were committed; payload [`super::payload::EvmBlockIndexed`].
    pub const EVM_BLOCK: &str = "evm.block";
    /// A chain reorganisation was rolled back; payload [`super::payload::Reorg`].
    pub const REORG: &str = "reorg";
    /// A price point was stored; payload [`super::payload::PriceRow`].
    pub const PRICE_UPDATED: &str = "price.updated";
    /// A price comparison was stored or filled; payload [`super::payload::PriceComparisonRow`].
    pub const PRICE_COMPARISON_UPDATED: &str = "price.comparison_updated";
    /// A Bitcoin block header was stored; payload [`super::payload::BitcoinBlock`].
    pub const BITCOIN_BLOCK: &str = "bitcoin.block";
    /// A Stellar operation was indexed for a watched account; payload
    /// [`super::payload::OperationIndexed`].
    pub const STELLAR_OPERATION_INDEXED: &str = "stellar.operation_indexed";
    /// A Stellar balance changed; payload [`super::payload::BalanceRow`] (the stored row).
    pub const STELLAR_BALANCE_CHANGED: &str = "stellar.balance_changed";
    /// A distribution changed; payload [`super::payload::DistributionRow`].
    pub const DISTRIBUTION_UPDATED: &str = "distribution.updated";
    /// Trigger actions were queued; payload [`super::payload::ActionQueued`].
    pub const ACTION_QUEUED: &str = "trigger.action_queued";
}

/// One notification: what happened (the payload's topic) and the changed object.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEvent {
    /// The typed payload; its variant is the topic.
    pub payload: Payload,
    /// When the event was published.
    pub at: DateTime<Utc>,
}

impl BusEvent {
    /// A new event stamped now.
    pub fn new(payload: impl Into<Payload>) -> Self {
        Self {
            payload: payload.into(),
            at: Utc::now(),
        }
    }

    /// The topic, e.g. `source.updated` (one of [`topics`]).
    pub fn topic(&self) -> &'static str {
        self.payload.topic()
    }
}

/// Why the bus could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Redis refused or could not be reached.
    #[error("redis event bus: {0}")]
    Redis(#[from] redis::RedisError),
    /// The event could not be encoded.
    #[error("event bus payload: {0}")]
    Encode(#[from] serde_json::Error),
    /// The bus did not answer in time.
    #[error("redis event bus did not answer within {0:?}")]
    Timeout(Duration),
}

/// The seam between writers (sync engine, admin mutations) and readers (subscriptions).
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an event to every subscriber of every replica.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError>;
    /// A receiver of every event from now on.
    fn subscribe(&self) -> broadcast::Receiver<BusEvent>;
    /// Checks the bus is reachable (for `/ready` and health).
    async fn ping(&self) -> Result<(), BusError>;
    /// `local` or `redis`.
    fn kind(&self) -> &'static str;
}

/// Shared handle to whichever bus is configured.
pub type SharedBus = Arc<dyn EventBus>;

/// Publishes and records the outcome in metrics; a failure is logged, never fatal: the
/// database already holds the change.
pub async fn publish_logged(bus: &dyn EventBus, event: BusEvent) {
    let topic = event.topic();
    match bus.publish(event).await {
        Ok(()) => Metrics::global()
            .bus_published
            .with_label_values(&[topic])
            .inc(),
        Err(e) => {
            Metrics::global()
                .bus_publish_failures
                .with_label_values(&[topic])
                .inc();
            tracing::warn!(topic = %topic, error = %e, "event bus publish failed");
        }
    }
}

/// In-process bus: one broadcast channel.
#[derive(Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<BusEvent>,
}

impl LocalBus {
    /// A bus with the default capacity.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(FANOUT_CAPACITY);
        Self { tx }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        // No receiver is not an error: nobody is listening right now.
        let _ = self.tx.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

/// Redis pub/sub bus. A background task keeps a pattern subscription to `orrery:*` open
/// (reconnecting with backoff) and forwards messages into a local fan-out channel.
pub struct RedisBus {
    client: redis::Client,
    publisher: redis::aio::ConnectionManager,
    fanout: broadcast::Sender<BusEvent>,
    listener: tokio::task::JoinHandle<()>,
    timeout: Duration,
    /// Events that failed to publish since the last success (announced once Redis is back).
    unpublished: std::sync::atomic::AtomicU64,
}

impl RedisBus {
    /// Connects to `url` and starts the listener. Fails when Redis cannot be reached, so a
    /// misconfigured `REDIS_URL` is reported at start.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        // A plain connection first: fails fast with the real reason (refused, auth, DNS),
        // where the connection manager would keep retrying.
        tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| BusError::Timeout(timeout))??;
        let publisher =
            tokio::time::timeout(timeout, redis::aio::ConnectionManager::new(client.clone()))
                .await
                .map_err(|_| BusError::Timeout(timeout))??;
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        // Subscribe before returning so no event published after `connect` is missed.
        let pubsub = tokio::time::timeout(timeout, Self::open_subscription(&client))
            .await
            .map_err(|_| BusError::Timeout(timeout))??;
        let listener = tokio::spawn(Self::listen(client.clone(), fanout.clone(), Some(pubsub)));
        Ok(Self {
            client,
            publisher,
            fanout,
            listener,
            timeout,
            unpublished: std::sync::atomic::AtomicU64::new(0),
        })
    }

    async fn publish_raw(&self, event: &BusEvent) -> Result<(), BusError> {
        let channel = format!("{REDIS_PREFIX}{}", event.topic());
        let body = payload::encode(event)?;
        let mut conn = self.publisher.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(body);
        let publish = cmd.query_async::<i64>(&mut conn);
        tokio::time::timeout(self.timeout, publish)
            .await
            .map_err(|_| BusError::Timeout(self.timeout))??;
        Ok(())
    }

    async fn open_subscription(client: &redis::Client) -> Result<redis::aio::PubSub, BusError> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(format!("{REDIS_PREFIX}*")).await?;
        Ok(pubsub)
    }

    async fn listen(
        client: redis::Client,
        fanout: broadcast::Sender<BusEvent>,
        mut first: Option<redis::aio::PubSub>,
    ) {
        let mut delay = Duration::from_millis(100);
        // When the subscription was lost: everything published from then until it is open
        // again never reaches this replica.
        let mut down_since: Option<DateTime<Utc>> = None;
        loop {
            let pubsub = match first.take() {
                Some(p) => Ok(p),
                None => Self::open_subscription(&client).await,
            };
            match pubsub {
                Ok(mut pubsub) => {
                    delay = Duration::from_millis(100);
                    if let Some(since) = down_since.take() {
                        let secs = (Utc::now() - since).num_milliseconds().max(0) as f64 / 1000.0;
                        Metrics::global()
                            .bus_reconnects
                            .with_label_values(&["redis"])
                            .inc();
                        tracing::warn!(down_for_secs = secs, "redis bus subscription restored; subscribers are told they may have missed events");
                        let _ = fanout.send(BusEvent::new(payload::EventsMissed {
                            reason: format!("the Redis event bus was unreachable for {secs:.1} s; events published meanwhile were not received"),
                            since: Some(since),
                            down_for_seconds: Some(secs),
                            unpublished: None,
                        }));
                    }
                    let mut stream = pubsub.on_message();
                    while let Some(msg) = stream.next().await {
                        let payload: Vec<u8> = match msg.get_payload() {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable redis bus message");
                                continue;
                            }
                        };
                        match payload::decode(&payload) {
                            Ok(event) => {
                                let _ = fanout.send(event);
                            }
                            Err(e) => skipped_message(&e),
                        }
                    }
                    tracing::warn!("redis bus subscription closed; reconnecting");
                    down_since.get_or_insert_with(Utc::now);
                }
                Err(e) => {
                    down_since.get_or_insert_with(Utc::now);
                    tracing::warn!(error = %e, retry_in = ?delay, "redis bus subscribe failed")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Logs a Redis message that was not decoded: at `warn` for the 1st, 2nd, 4th, 8th, ...
/// (a replica of another version publishes steadily during a rolling upgrade), else `debug`.
fn skipped_message(e: &payload::WireError) {
    static SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(error = %e, skipped_so_far = n, "redis bus message skipped");
    } else {
        tracing::debug!(error = %e, "redis bus message skipped");
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait]
impl EventBus for RedisBus {
    /// Publishes through Redis. After failed publishes, the first one that gets through is
    /// preceded by an [`topics::EVENTS_MISSED`] marker, so every replica's subscribers learn
    /// that events were lost.
    async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        use std::sync::atomic::Ordering;
        let lost = self.unpublished.load(Ordering::Relaxed);
        if lost > 0 {
            let marker = BusEvent::new(payload::EventsMissed {
                reason: format!("{lost} events could not be published while the Redis event bus was unreachable"),
                since: None,
                down_for_seconds: None,
                unpublished: Some(lost),
            });
            if self.publish_raw(&marker).await.is_ok() {
                self.unpublished.fetch_sub(lost, Ordering::Relaxed);
            }
        }
        let result = self.publish_raw(&event).await;
        if result.is_err() {
            self.unpublished.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.fanout.subscribe()
    }

    async fn ping(&self) -> Result<(), BusError> {
        let check = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<(), BusError>(())
        };
        tokio::time::timeout(self.timeout, check)
            .await
            .map_err(|_| BusError::Timeout(self.timeout))?
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_bus_delivers_to_every_subscriber() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let sent = BusEvent::new(payload::ActionQueued {
            chain: "t".into(),
            queued: 1,
        });
        bus.publish(sent.clone()).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), sent);
        assert_eq!(b.recv().await.unwrap().topic(), topics::ACTION_QUEUED);
    }

    #[tokio::test]
    async fn redis_bus_round_trips_between_two_connections() {
        let Ok(url) = std::env::var("ORRERY_TEST_REDIS_URL") else {
            eprintln!("ORRERY_TEST_REDIS_URL not set: skipping the Redis bus test");
            return;
        };
        let timeout = Duration::from_secs(5);
        let one = RedisBus::connect(&url, timeout).await.unwrap();
        let two = RedisBus::connect(&url, timeout).await.unwrap();
        let mut rx = two.subscribe();
        let chain = format!("test.{}", std::process::id());
        // A replica still on the untyped format publishes first: skipped, not fatal.
        let mut raw = one.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(format!("{REDIS_PREFIX}{}", topics::ACTION_QUEUED))
            .arg(format!(
                r#"{{"topic":"{}","payload":{{"chain":"{chain}","queued":1}},"at":"2026-01-01T00:00:00Z"}}"#,
                topics::ACTION_QUEUED
            ))
            .query_async::<i64>(&mut raw)
            .await
            .unwrap();
        let sent = BusEvent::new(payload::ActionQueued {
            chain: chain.clone(),
            queued: 2,
        });
        one.publish(sent.clone()).await.unwrap();
        let got = tokio::time::timeout(timeout, async {
            loop {
                let e = rx.recv().await.unwrap();
                if matches!(&e.payload, Payload::ActionQueued(q) if q.chain == chain) {
                    return e;
                }
            }
        })
        .await
        .unwrap();
        // The old-format message never came through; the typed one did, unchanged.
        assert_eq!(got, sent);
        two.ping().await.unwrap();
    }

    #[tokio::test]
    async fn redis_bus_reports_unreachable_server() {
        let err = RedisBus::connect("redis://127.0.0.1:1", Duration::from_secs(2))
            .await
            .err()
            .expect("connect to a closed port must fail");
        assert!(err.to_string().contains("redis") || err.to_string().contains("within"));
    }
}
