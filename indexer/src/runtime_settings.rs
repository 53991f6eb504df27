//! The runtime settings of the `config` table that the sync side applies while it runs:
//! `sync.batch_size`, `stellar.rate_limit` and `sync.stall_timeout`.
//!
//! [`RuntimeSettings`] is a cheap, cloneable handle on the typed values in force. A
//! background task ([`RuntimeSettings::spawn_refresher`]) re-reads the table every
//! [`REFRESH_INTERVAL`] and at once when a `config.updated` event arrives on the bus (the
//! `setConfig` mutation and `orrery config set` publish one), so a change takes effect
//! without a restart, within two seconds on every replica.
//!
//! Precedence: a row applies once an operator has written it (`updated_by` is anything but
//! [`config_store::SEED_ACTOR`]). Until then, and when the row is missing, the process's
//! start value applies: the file's `stellar.page_size` and `stellar.requests_per_hour`, and
//! the engine default (30 minutes, the seed's value) for `sync.stall_timeout`. A stored value
//! that does not make sense for its setting (a batch size of 0, a negative rate) is logged
//! once and the value in force is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orrery_entity::config_entry;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::bus::{topics, BusEvent, SharedBus};
use crate::config_store::{self, parse_duration_secs};
use crate::metrics::Metrics;
use crate::upstream::UpstreamClient;

/// Key of the records-per-page setting.
pub const BATCH_SIZE_KEY: &str = "sync.batch_size";
/// Key of the Horizon requests-per-hour setting.
pub const STELLAR_RATE_LIMIT_KEY: &str = "stellar.rate_limit";
/// Key of the stall timeout setting.
pub const STALL_TIMEOUT_KEY: &str = "sync.stall_timeout";
/// The largest page Horizon serves.
pub const HORIZON_MAX_PAGE: u32 = 200;
/// How often the table is re-read.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

const KEYS: [&str; 3] = [BATCH_SIZE_KEY, STELLAR_RATE_LIMIT_KEY, STALL_TIMEOUT_KEY];

/// The typed values of the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Values {
    /// Records per upstream page, at least 1 (not yet clamped to an upstream's maximum).
    pub batch_size: u32,
    /// Horizon requests per hour; 0 means no local budget (server signals still apply).
    pub stellar_rate_limit_per_hour: u32,
    /// How long a source may make no progress before it is restarted; never zero.
    pub stall_timeout: Duration,
}

impl Default for Values {
    /// The file defaults (`stellar.page_size`, `stellar.requests_per_hour`) and the engine's
    /// stall timeout, which are also the seeded rows' values.
    fn default() -> Self {
        Self {
            batch_size: HORIZON_MAX_PAGE,
            stellar_rate_limit_per_hour: crate::upstream::UpstreamConfig::DEFAULT_REQUESTS_PER_HOUR,
            stall_timeout: crate::sync::EngineConfig::default().stall_timeout,
        }
    }
}

/// A stored value that was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The key.
    pub key: &'static str,
    /// The stored text.
    pub value: String,
    /// Why it was not applied.
    pub reason: &'static str,
}

/// What one refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Whether a value in force changed.
    pub changed: bool,
    /// Stored values that were not applied (the previous value was kept).
    pub rejected: Vec<Rejected>,
}

/// Shared handle on the runtime settings in force (see the module docs).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Start values: what applies while no operator has written a key.
    fallback: Values,
    tx: watch::Sender<Values>,
    /// The rejected text last logged per key, so a bad value is logged once, not every
    /// refresh.
    warned: Mutex<HashMap<&'static str, String>>,
}

impl RuntimeSettings {
    /// A handle whose values are `fallback` until the table says otherwise.
    pub fn new(fallback: Values) -> Self {
        let (tx, _) = watch::channel(fallback);
        let settings = Self {
            inner: Arc::new(Inner {
                fallback,
                tx,
                warned: Mutex::new(HashMap::new()),
            }),
        };
        settings.publish_metrics();
        settings
    }

    /// All values in force.
    pub fn values(&self) -> Values {
        *self.inner.tx.borrow()
    }

    /// Records per upstream page, clamped to Horizon's 1..=200.
    pub fn batch_size(&self) -> u32 {
        self.values().batch_size.clamp(1, HORIZON_MAX_PAGE)
    }

    /// How long a source may make no progress before the supervisor restarts it.
    pub fn stall_timeout(&self) -> Duration {
        self.values().stall_timeout
    }

    /// Horizon's local request budget per hour (0 = none).
    pub fn stellar_rate_limit_per_hour(&self) -> u32 {
        self.values().stellar_rate_limit_per_hour
    }

    /// A receiver that sees every change of the values.
    pub fn subscribe(&self) -> watch::Receiver<Values> {
        self.inner.tx.subscribe()
    }

    /// Re-reads the settings from the `config` table and applies what changed.
    pub async fn refresh<C: ConnectionTrait>(&self, db: &C) -> Result<RefreshReport, DbErr> {
        let rows: HashMap<String, config_entry::Model> = config_entry::Entity::find()
            .filter(config_entry::Column::Key.is_in(KEYS))
            .all(db)
            .await?
            .into_iter()
            .map(|row| (row.key.clone(), row))
            .collect();
        let stored = |key: &str| {
            rows.get(key)
                .filter(|row| row.updated_by.as_deref() != Some(config_store::SEED_ACTOR))
                .map(|row| row.value.as_str())
        };
        let current = self.values();
        let fallback = self.inner.fallback;
        let mut rejected = Vec::new();
        let next = Values {
            batch_size: self.resolve(
                BATCH_SIZE_KEY,
                stored(BATCH_SIZE_KEY),
                fallback.batch_size,
                current.batch_size,
                parse_batch_size,
                &mut rejected,
            ),
            stellar_rate_limit_per_hour: self.resolve(
                STELLAR_RATE_LIMIT_KEY,
                stored(STELLAR_RATE_LIMIT_KEY),
                fallback.stellar_rate_limit_per_hour,
                current.stellar_rate_limit_per_hour,
                parse_rate_limit,
                &mut rejected,
            ),
            stall_timeout: self.resolve(
                STALL_TIMEOUT_KEY,
                stored(STALL_TIMEOUT_KEY),
                fallback.stall_timeout,
                current.stall_timeout,
                parse_stall_timeout,
                &mut rejected,
            ),
        };
        let changed = self.inner.tx.send_if_modified(|values| {
            let changed = *values != next;
            *values = next;
            changed
        });
        if changed {
            tracing::info!(
                batch_size = next.batch_size,
                stellar_rate_limit = next.stellar_rate_limit_per_hour,
                stall_timeout_secs = next.stall_timeout.as_secs(),
                "runtime settings changed"
            );
            self.publish_metrics();
        }
        Ok(RefreshReport { changed, rejected })
    }

    /// The value of one setting: the stored one when an operator wrote a valid one, the
    /// start value when no operator wrote one, the value in force when the stored one is bad.
    fn resolve<T>(
        &self,
        key: &'static str,
        stored: Option<&str>,
        fallback: T,
        current: T,
        parse: fn(&str) -> Result<T, &'static str>,
        rejected: &mut Vec<Rejected>,
    ) -> T {
        let mut warned = self
            .inner
            .warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(raw) = stored else {
            warned.remove(key);
            return fallback;
        };
        match parse(raw) {
            Ok(v) => {
                warned.remove(key);
                v
            }
            Err(reason) => {
                if warned.get(key).map(String::as_str) != Some(raw) {
                    tracing::warn!(
                        key,
                        value = raw,
                        reason,
                        "runtime setting not applied; the value in force is kept"
                    );
                    warned.insert(key, raw.to_string());
                }
                rejected.push(Rejected {
                    key,
                    value: raw.to_string(),
                    reason,
                });
                current
            }
        }
    }

    fn publish_metrics(&self) {
        let v = self.values();
        let gauge = &Metrics::global().runtime_setting;
        gauge.reset();
        for (key, value) in [
            (BATCH_SIZE_KEY, u64::from(self.batch_size())),
            (
                STELLAR_RATE_LIMIT_KEY,
                u64::from(v.stellar_rate_limit_per_hour),
            ),
            (STALL_TIMEOUT_KEY, v.stall_timeout.as_secs()),
        ] {
            gauge
                .with_label_values(&[key, value.to_string().as_str()])
                .set(1.0);
        }
    }

    /// Refreshes from `db` now, then every [`REFRESH_INTERVAL`] and whenever `bus` carries a
    /// `config.updated` event, until the task is aborted. Database errors are logged and the
    /// values in force kept.
    pub fn spawn_refresher(&self, db: DatabaseConnection, bus: SharedBus) -> JoinHandle<()> {
        let settings = self.clone();
        let mut events = Some(bus.subscribe());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let refresh = tokio::select! {
                    _ = tick.tick() => true,
                    wanted = config_event(&mut events) => wanted,
                };
                if !refresh {
                    continue;
                }
                if let Err(e) = settings.refresh(&db).await {
                    tracing::warn!(error = %e, "cannot read runtime settings; values in force kept");
                }
            }
        })
    }

    /// Keeps `client`'s rate-limit budget equal to `stellar.rate_limit`: applies the value
    /// in force now and every change after, until the task is aborted or every handle is
    /// dropped.
    pub fn follow_stellar_rate_limit(&self, client: UpstreamClient) -> JoinHandle<()> {
        let mut rx = self.subscribe();
        tokio::spawn(async move {
            loop {
                let rate = rx.borrow_and_update().stellar_rate_limit_per_hour;
                if client.rate_limiter().requests_per_hour() != rate {
                    client.rate_limiter().set_rate(rate);
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// Waits for the next bus event; true when it may have changed the config (a
/// `config.updated` event, or events were missed). A closed bus is dropped (`None`) and
/// never wakes again, leaving the timer to keep the values current.
async fn config_event(events: &mut Option<broadcast::Receiver<BusEvent>>) -> bool {
    let Some(rx) = events.as_mut() else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(e) => e.topic() == topics::CONFIG_UPDATED,
        Err(broadcast::error::RecvError::Lagged(_)) => true,
        Err(broadcast::error::RecvError::Closed) => {
            *events = None;
            false
        }
    }
}

fn parse_batch_size(raw: &str) -> Result<u32, &'static str> {
    match raw.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Ok(_) => Err("a batch size must be at least 1"),
        Err(_) => Err("not an integer"),
    }
}

fn parse_rate_limit(raw: &str) -> Result<u32, &'static str> {
    match raw.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Ok(_) => Err(
            "a rate limit must be 0 (no local budget) or a positive number of requests per hour",
        ),
        Err(_) => Err("not an integer"),
    }
}

fn parse_stall_timeout(raw: &str) -> Result<Duration, &'static str> {
    match parse_duration_secs(raw) {
        Some(0) => Err("a stall timeout must be longer than 0 s"),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err("not a duration (seconds or a number with s/m/h/d)"),
    }
}

#[cfg(test)]
mod tests {
    use orrery_migration::{Migrator, MigratorTrait};
    use sea_orm::Database;

    use super::*;

    async fn db() -> DatabaseConnection {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        config_store::seed_defaults(&db).await.unwrap();
        db
    }

    async fn set(db: &DatabaseConnection, key: &str, value: &str) {
        config_store::set(db, key, value, None, None, "operator")
            .await
            .unwrap();
    }

    fn file_values() -> Values {
        Values {
            batch_size: 7,
            stellar_rate_limit_per_hour: 10_000,
            stall_timeout: Duration::from_secs(1800),
        }
    }

    #[tokio::test]
    async fn seeded_rows_leave_the_file_values_in_force() {
        let db = db().await;
        let s = RuntimeSettings::new(file_values());
        let report = s.refresh(&db).await.unwrap();
        assert_eq!(report, RefreshReport::default());
        assert_eq!(s.values(), file_values());
        assert_eq!(s.batch_size(), 7);
    }

    #[tokio::test]
    async fn an_operator_value_applies_on_the_next_refresh() {
        let db = db().await;
        let s = RuntimeSettings::new(file_values());
        let mut rx = s.subscribe();
        set(&db, BATCH_SIZE_KEY, "50").await;
        set(&db, STELLAR_RATE_LIMIT_KEY, "720").await;
        set(&db, STALL_TIMEOUT_KEY, "90s").await;
        // Nothing changes until the refresh.
        assert_eq!(s.batch_size(), 7);
        let report = s.refresh(&db).await.unwrap();
        assert!(report.changed && report.rejected.is_empty(), "{report:?}");
        assert!(rx.has_changed().unwrap());
        assert_eq!(s.batch_size(), 50);
        assert_eq!(s.stellar_rate_limit_per_hour(), 720);
        assert_eq!(s.stall_timeout(), Duration::from_secs(90));
        // A second refresh with nothing new reports no change.
        rx.borrow_and_update();
        assert!(!s.refresh(&db).await.unwrap().changed);
        assert!(!rx.has_changed().unwrap());
        // Clones share the values.
        let clone = s.clone();
        set(&db, BATCH_SIZE_KEY, "1000").await;
        s.refresh(&db).await.unwrap();
        assert_eq!(clone.values().batch_size, 1000);
        assert_eq!(
            clone.batch_size(),
            HORIZON_MAX_PAGE,
            "clamped to Horizon's max"
        );
        set(&db, STELLAR_RATE_LIMIT_KEY, "0").await;
        s.refresh(&db).await.unwrap();
        assert_eq!(s.stellar_rate_limit_per_hour(), 0);
    }

    #[tokio::test]
    async fn an_invalid_stored_value_keeps_the_previous_one() {
        let db = db().await;
        let s = RuntimeSettings::new(file_values());
        set(&db, BATCH_SIZE_KEY, "50").await;
        s.refresh(&db).await.unwrap();
        // Valid integers and durations that make no sense for these settings.
        set(&db, BATCH_SIZE_KEY, "0").await;
        set(&db, STELLAR_RATE_LIMIT_KEY, "-5").await;
        set(&db, STALL_TIMEOUT_KEY, "0").await;
        let report = s.refresh(&db).await.unwrap();
        assert!(!report.changed);
        let keys: Vec<&str> = report.rejected.iter().map(|r| r.key).collect();
        assert_eq!(keys, KEYS);
        assert_eq!(report.rejected[0].value, "0");
        assert_eq!(s.batch_size(), 50);
        assert_eq!(s.stellar_rate_limit_per_hour(), 10_000);
        assert_eq!(s.stall_timeout(), Duration::from_secs(1800));
        // Text that bypassed validation (written straight to the table) is rejected too.
        let mut row: config_entry::ActiveModel = config_store::get(&db, STALL_TIMEOUT_KEY)
            .await
            .unwrap()
            .unwrap()
            .into();
        row.value = sea_orm::Set("soon".into());
        sea_orm::ActiveModelTrait::update(row, &db).await.unwrap();
        let report = s.refresh(&db).await.unwrap();
        assert_eq!(report.rejected.len(), 3);
        assert_eq!(s.stall_timeout(), Duration::from_secs(1800));
        // A good value again applies.
        set(&db, STALL_TIMEOUT_KEY, "5m").await;
        let report = s.refresh(&db).await.unwrap();
        assert!(report.changed);
        assert_eq!(s.stall_timeout(), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_missing_row_means_the_start_value() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        let s = RuntimeSettings::new(file_values());
        assert_eq!(s.refresh(&db).await.unwrap(), RefreshReport::default());
        assert_eq!(s.values(), file_values());
    }

    #[tokio::test]
    async fn the_refresher_applies_changes_and_the_limiter_follows() {
        let db = db().await;
        let bus: SharedBus = Arc::new(crate::bus::LocalBus::new());
        let s = RuntimeSettings::new(file_values());
        let mut cfg = crate::upstream::UpstreamConfig::new(
            "test-runtime-settings-horizon",
            vec![url::Url::parse("http://127.0.0.1:1").unwrap()],
        );
        cfg.requests_per_hour = 10_000;
        let client = UpstreamClient::new(cfg).unwrap();
        let follower = s.follow_stellar_rate_limit(client.clone());
        let refresher = s.spawn_refresher(db.clone(), bus.clone());
        set(&db, STELLAR_RATE_LIMIT_KEY, "360").await;
        // The bus event wakes the refresher before its next tick.
        crate::bus::publish_logged(
            bus.as_ref(),
            crate::bus::BusEvent::new(orrery_entity::config_entry::Model {
                key: STELLAR_RATE_LIMIT_KEY.into(),
                value: "360".into(),
                value_type: "integer".into(),
                description: None,
                updated_at: chrono::Utc::now(),
                updated_by: None,
            }),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while client.rate_limiter().requests_per_hour() != 360 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "limiter never followed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.stellar_rate_limit_per_hour(), 360);
        refresher.abort();
        follower.abort();
    }
}
