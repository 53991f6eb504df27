//! Leases: on a shared PostgreSQL database each source is run by exactly one replica.
//!
//! A `source_lease` row names the holder, a fencing token (one more at every change of
//! holder) and an expiry the holder pushes forward every [`LeaseConfig::renew_every`]. A
//! replica takes a lease only when it is free or lapsed, and only up to its fair share of
//! the sources (sources / live replicas, from the `replica` heartbeats), so leases spread;
//! a replica above its share hands one back. Every write transaction of a source first
//! locks its lease row and checks holder and token ([`SourceLease::check`]): a replica that
//! was paused past its expiry (or cut off) and comes back cannot commit, even before its
//! renewal notices the loss. All times are the database's `now()`, so replica clocks do not
//! matter. SQLite runs one process and uses no lease.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
};
use tokio_util::sync::CancellationToken;

/// Timing of leases and heartbeats.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// How long a lease lasts without renewal: the longest a dead leader holds a source.
    pub ttl: Duration,
    /// How often the holder renews (and a standby looks for a free lease).
    pub renew_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(6),
            renew_every: Duration::from_secs(1),
        }
    }
}

/// Why a held lease ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The process is stopping.
    Cancelled,
    /// Another replica holds it now, or it lapsed before a renewal got through.
    Lost(String),
    /// Handed back to spread sources across more replicas.
    Shed,
}

/// The process-wide side of leasing: this replica's identity and the leases it holds.
#[derive(Clone)]
pub struct Leases {
    db: DatabaseConnection,
    replica: Arc<str>,
    role: Arc<str>,
    config: LeaseConfig,
    sources: Arc<Mutex<Vec<String>>>,
    held: Arc<Mutex<BTreeMap<String, i64>>>,
    /// One acquisition at a time per replica, so the fair share holds.
    acquiring: Arc<tokio::sync::Mutex<()>>,
    /// No lease is taken before this, so replicas started together see each other first.
    settle_until: tokio::time::Instant,
    /// Indexing replicas alive, counted once per heartbeat (0 until the first heartbeat),
    /// so the per-source fair-share checks do not each query `replica`.
    live: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("replica", &self.replica)
            .finish()
    }
}

fn pg(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

impl Leases {
    /// Leasing for replica `replica` (role `role`: `all` or `indexer`) on `db`, which must
    /// be PostgreSQL.
    pub fn new(db: DatabaseConnection, replica: &str, role: &str, config: LeaseConfig) -> Self {
        Self {
            db,
            replica: replica.into(),
            role: role.into(),
            sources: Arc::new(Mutex::new(Vec::new())),
            held: Arc::new(Mutex::new(BTreeMap::new())),
            acquiring: Arc::new(tokio::sync::Mutex::new(())),
            settle_until: tokio::time::Instant::now() + config.renew_every * 3,
            live: Arc::new(AtomicUsize::new(0)),
            config,
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The lease of `source_id`, registered with this process.
    pub fn lease(&self, source_id: &str) -> Arc<SourceLease> {
        if let Ok(mut s) = self.sources.lock() {
            if !s.iter().any(|x| x == source_id) {
                s.push(source_id.to_string());
            }
        }
        Arc::new(SourceLease {
            leases: self.clone(),
            source: source_id.to_string(),
            token: Mutex::new(None),
        })
    }

    /// Writes this replica's heartbeat now and then every `renew_every` until `cancel`, then
    /// deletes it (so the others rebalance at once).
    pub fn spawn_heartbeat(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.heartbeat().await {
                    tracing::warn!(replica = %me.replica, error = %e, "cannot write the replica heartbeat");
                }
                match me.live_replicas().await {
                    Ok(n) => me.live.store(n, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(replica = %me.replica, error = %e, "cannot count replicas")
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(me.config.renew_every) => {}
                }
            }
            let _ = me
                .db
                .execute_raw(pg(
                    "DELETE FROM replica WHERE id = $1",
                    vec![me.replica.to_string().into()],
                ))
                .await;
        })
    }

    /// Writes the heartbeat once.
    pub async fn heartbeat(&self) -> Result<(), DbErr> {
        self.db
            .execute_raw(pg(
                "INSERT INTO replica (id, role, started_at, seen_at) VALUES ($1, $2, now(), now()) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = now(), role = EXCLUDED.role",
                vec![self.replica.to_string().into(), self.role.to_string().into()],
            ))
            .await
            .map(|_| ())
    }

    /// Replicas that index (role `all` or `indexer`) seen within three heartbeats.
    async fn live_replicas(&self) -> Result<usize, DbErr> {
        let window = (self.config.renew_every * 3).as_secs_f64().max(3.0);
        let row = self
            .db
            .query_one_raw(pg(
                "SELECT COUNT(*) AS n FROM replica WHERE role <> 'api' \
                 AND seen_at > now() - make_interval(secs => $1)",
                vec![window.into()],
            ))
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok((n as usize).max(1))
    }

    /// How many leases this replica should hold at most: from the count of the last
    /// heartbeat, or a fresh count when no heartbeat task has run yet.
    async fn fair_share(&self) -> Result<usize, DbErr> {
        let total = self.sources.lock().map(|s| s.len()).unwrap_or(1).max(1);
        let live = match self.live.load(Ordering::Relaxed) {
            0 => self.live_replicas().await?,
            n => n,
        };
        Ok(total.div_ceil(live))
    }

    fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }

    fn set_held(&self, source: &str, token: Option<i64>) {
        if let Ok(mut h) = self.held.lock() {
            match token {
                Some(t) => {
                    h.insert(source.to_string(), t);
                }
                None => {
                    h.remove(source);
                }
            }
        }
    }

    /// Whether this replica holds more than its share and `source` is the one to hand back
    /// (the last of its held sources by id, so only one goes per round).
    async fn should_shed(&self, source: &str) -> bool {
        let Ok(share) = self.fair_share().await else {
            return false;
        };
        let Ok(held) = self
            .held
            .lock()
            .map(|h| h.keys().cloned().collect::<Vec<_>>())
        else {
            return false;
        };
        held.len() > share && held.last().is_some_and(|s| s == source)
    }
}

/// One source's lease, as the supervisor and the engine of this process see it.
pub struct SourceLease {
    leases: Leases,
    source: String,
    token: Mutex<Option<i64>>,
}

impl std::fmt::Debug for SourceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLease")
            .field("source", &self.source)
            .field("token", &self.token())
            .finish()
    }
}

impl SourceLease {
    /// The fencing token this replica holds, if any.
    pub fn token(&self) -> Option<i64> {
        self.token.lock().ok().and_then(|t| *t)
    }

    fn set_token(&self, token: Option<i64>) {
        let before = match self.token.lock() {
            Ok(mut t) => std::mem::replace(&mut *t, token),
            Err(_) => None,
        };
        self.leases.set_held(&self.source, token);
        let event = match (before, token) {
            (None, Some(_)) => "acquired",
            (Some(_), None) => "lost",
            _ => return,
        };
        crate::metrics::Metrics::global()
            .lease_changes
            .with_label_values(&[&self.source, event])
            .inc();
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        self.leases.replica()
    }

    /// Tries once to take the lease (free, lapsed, or already ours): the new token.
    pub async fn try_acquire(&self) -> Result<Option<i64>, DbErr> {
        let ttl = self.leases.config.ttl.as_secs_f64();
        let row = self
            .leases
            .db
            .query_one_raw(pg(
                "INSERT INTO source_lease (source_id, holder, token, acquired_at, renewed_at, expires_at) \
                 VALUES ($1, $2, 1, now(), now(), now() + make_interval(secs => $3)) \
                 ON CONFLICT (source_id) DO UPDATE SET holder = EXCLUDED.holder, \
                   token = source_lease.token + 1, acquired_at = now(), renewed_at = now(), \
                   expires_at = EXCLUDED.expires_at \
                 WHERE source_lease.expires_at < now() \
                 RETURNING token",
                vec![self.source.clone().into(), self.leases.replica.to_string().into(), ttl.into()],
            ))
            .await?;
        let token = match row {
            Some(r) => Some(r.try_get::<i64>("", "token")?),
            None => None,
        };
        Ok(token)
    }

    /// Waits until this replica holds the lease (trying every `renew_every`, and only while
    /// it holds less than its fair share); `None` when `cancel` fires first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Option<i64> {
        loop {
            // Waiting first lets replicas started together see each other's heartbeats.
            let wake = (tokio::time::Instant::now() + self.leases.config.renew_every)
                .max(self.leases.settle_until);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let _one_at_a_time = self.leases.acquiring.lock().await;
            let share = match self.leases.fair_share().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot count replicas");
                    continue;
                }
            };
            if self.leases.held_count() >= share {
                continue;
            }
            match self.try_acquire().await {
                Ok(Some(token)) => {
                    self.set_token(Some(token));
                    tracing::info!(source = %self.source, replica = %self.replica(), token,
                        "lease acquired: this replica runs the source");
                    return Some(token);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot take the lease")
                }
            }
        }
    }

    /// Renews the held lease until it is lost, handed back, or `cancel` fires.
    pub async fn hold(&self, cancel: &CancellationToken) -> LeaseEnd {
        let ttl = self.leases.config.ttl;
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return LeaseEnd::Cancelled,
                _ = tokio::time::sleep(self.leases.config.renew_every) => {}
            }
            let Some(token) = self.token() else {
                return LeaseEnd::Lost("no token held".into());
            };
            match self.renew(token).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    self.set_token(None);
                    return LeaseEnd::Lost(format!(
                        "the lease (token {token}) is held by another replica or lapsed"
                    ));
                }
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot renew the lease");
                    if last_renewal.elapsed() >= ttl {
                        self.set_token(None);
                        return LeaseEnd::Lost(format!("no renewal for {ttl:?}: {e}"));
                    }
                }
            }
            if self.leases.should_shed(&self.source).await {
                return LeaseEnd::Shed;
            }
        }
    }

    async fn renew(&self, token: i64) -> Result<bool, DbErr> {
        let ttl = self.leases.config.ttl.as_secs_f64();
        let r = self
            .leases
            .db
            .execute_raw(pg(
                "UPDATE source_lease SET renewed_at = now(), expires_at = now() + make_interval(secs => $4) \
                 WHERE source_id = $1 AND holder = $2 AND token = $3 AND expires_at > now()",
                vec![
                    self.source.clone().into(),
                    self.leases.replica.to_string().into(),
                    token.into(),
                    ttl.into(),
                ],
            ))
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Hands the lease back (it lapses at once), after the source task stopped.
    pub async fn release(&self) {
        let Some(token) = self.token() else { return };
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
        self.leases.set_held(&self.source, None);
        crate::metrics::Metrics::global()
            .lease_changes
            .with_label_values(&[&self.source, "released"])
            .inc();
        let r = self
            .leases
            .db
            .execute_raw(pg(
                "UPDATE source_lease SET expires_at = now() - interval '1 second' \
                 WHERE source_id = $1 AND holder = $2 AND token = $3",
                vec![
                    self.source.clone().into(),
                    self.leases.replica.to_string().into(),
                    token.into(),
                ],
            ))
            .await;
        if let Err(e) = r {
            tracing::warn!(source = %self.source, error = %e, "cannot hand the lease back; it lapses by itself");
        }
    }

    /// The fence, run first in every write transaction of the source: locks the lease row
    /// (a takeover waits for this transaction) and fails unless this replica still holds it
    /// with its token, unexpired.
    pub async fn check(&self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        let Some(token) = self.token() else {
            return Err(self.fenced("this replica holds no lease"));
        };
        let row = txn
            .query_one_raw(pg(
                "SELECT token FROM source_lease WHERE source_id = $1 AND holder = $2 AND token = $3 \
                 AND expires_at > now() FOR UPDATE",
                vec![self.source.clone().into(), self.leases.replica.to_string().into(), token.into()],
            ))
            .await?;
        if row.is_none() {
            self.set_token(None);
            return Err(self.fenced(&format!("token {token} is no longer current")));
        }
        Ok(())
    }

    fn fenced(&self, why: &str) -> DbErr {
        tracing::error!(source = %self.source, replica = %self.replica(),
            "fenced: lease lost ({why}); this replica commits nothing more for the source");
        DbErr::Custom(format!(
            "fenced: replica {} lost the lease of {} ({why})",
            self.replica(),
            self.source
        ))
    }
}

/// A replica id: `ORRERY_REPLICA_ID` when set, else `host:pid:random`.
pub fn replica_id() -> String {
    if let Ok(id) = std::env::var("ORRERY_REPLICA_ID") {
        if !id.trim().is_empty() {
            return id.trim().to_string();
        }
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "orrery".to_string());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}
