//! Opening the database and applying migrations.
//!
//! A SQLite file is opened as a server database: every connection runs in WAL mode with
//! `synchronous=NORMAL`, a busy timeout and foreign keys on, and writes go through a separate
//! pool of one connection ([`connect_writer`]) so readers never wait for writers and writers
//! queue in the process instead of failing with `database is locked`.

use std::time::Duration;

use orrery_migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::Config;

/// How long a SQLite connection waits for another connection's lock before giving up with
/// `database is locked`.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest wait for the SQLite writer connection: a write queues behind the writes in
/// progress (one source's batch can take a few seconds) instead of waiting on a file lock.
const WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting failed (unreachable host, bad credentials, missing file directory...).
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
}

/// `url` with the password replaced by `***`, safe to log.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A SQLite file URL without options gets `mode=rwc`, so the file is created on first run.
fn with_sqlite_defaults(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains('?') {
        format!("{url}?mode=rwc")
    } else {
        url.to_string()
    }
}

/// Whether `url` names a SQLite database file (not an in-memory database).
fn is_sqlite_file(url: &str) -> bool {
    url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=memory")
}

/// The settings every connection to a SQLite file gets: WAL (readers and the writer do not
/// block each other), `synchronous=NORMAL` (safe in WAL: a power loss may drop the last
/// commits, never corrupts), a busy timeout, and foreign keys enforced.
fn server_pragmas(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    opts.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Page cache of the one writer connection (KiB): the indexes of the large append-only
/// tables (random block and transaction hashes) are updated at random places, so a cache
/// much larger than SQLite's 2 MiB default saves most of the page reads of a backfill.
const SQLITE_WRITER_CACHE_KIB: u32 = 64 * 1024;

/// WAL pages after which a commit checkpoints (SQLite's default is 1,000, ~4 MiB): a
/// backfill commit of 10,000 events writes more than that, so with the default nearly
/// every commit also ran a checkpoint inside it. Fewer, larger checkpoints.
const SQLITE_WAL_AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// The writer's settings: the server settings, a larger page cache and a larger WAL
/// between checkpoints.
fn writer_pragmas(opts: SqliteConnectOptions) -> SqliteConnectOptions {
    server_pragmas(opts)
        .pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}"))
        .pragma(
            "wal_autocheckpoint",
            SQLITE_WAL_AUTOCHECKPOINT_PAGES.to_string(),
        )
        // Statement journals (every multi-row upsert inside a transaction keeps one, a copy
        // of each page it changes) in memory rather than in a temporary file: they were 12%
        // of the writer thread's time in pwrite calls during a backfill.
        .pragma("temp_store", "MEMORY")
}

/// Turns on SQLite's query-planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`) on a
/// new connection: a prepared statement keeps its plan whatever values are bound. Without it,
/// a statement with a bound `LIMIT ?` (every `.one()`, every page) or a bound value compared to
/// an indexed column is marked expired by each new binding and re-prepared (parsed and planned
/// again) on its next step, which made `sqlite3Reprepare` 10% of a point query's CPU time
/// (BENCHMARKS.md). Orrery's statements do not depend on value-specific plans.
async fn pin_plans(conn: &mut sea_orm::sqlx::SqliteConnection) -> Result<(), sea_orm::sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle();
    // SAFETY: `raw` is this connection's open handle, locked for the duration of the call;
    // SQLITE_DBCONFIG_ENABLE_QPSG takes an int and an int* (null: the old value is not read).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            raw.as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        return Err(sea_orm::sqlx::Error::Configuration(
            format!("sqlite3_db_config(SQLITE_DBCONFIG_ENABLE_QPSG) failed with code {rc}").into(),
        ));
    }
    Ok(())
}

/// A pooled connection idle at least this long is pinged before it is handed out.
const POOL_PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// Pool size and timeouts of one pool.
struct PoolSpec {
    /// The writer pool (its own SQLite settings).
    writer: bool,
    max_connections: u32,
    connect_timeout: Duration,
    acquire_timeout: Duration,
}

/// PostgreSQL's `idle_in_transaction_session_timeout` for Orrery's sessions. Every
/// transaction Orrery opens runs its statements back to back, so 5 s idle means the process
/// stopped (SIGSTOP, GC pause, partition): its locks are released and its transaction rolls back.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

/// Opens one pool on `url` and checks it answers.
async fn open_pool(url: &str, spec: PoolSpec) -> Result<DatabaseConnection, DbError> {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(spec.max_connections)
        .min_connections(1)
        .connect_timeout(spec.connect_timeout)
        .acquire_timeout(spec.acquire_timeout)
        // Ping only connections idle long enough to have been dropped by the server or a
        // proxy, not every checkout (that was one extra round trip per query).
        .test_before_acquire_if_idle_for(POOL_PING_IF_IDLE_FOR)
        .sqlx_logging(false);
    if url.starts_with("postgres") {
        // A session left idle inside a transaction (a paused or partitioned replica) is ended
        // by the server, so the row locks it holds (a source's lease row, see
        // `orrery_indexer::sync::lease`) never block a takeover for longer than this.
        opts.map_sqlx_postgres_opts(|o| {
            o.options([(
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            )])
        });
    }
    if is_sqlite_file(url) {
        opts.map_sqlx_sqlite_opts(if spec.writer {
            writer_pragmas
        } else {
            server_pragmas
        });
    }
    if url.starts_with("sqlite:") {
        opts.map_sqlx_sqlite_pool_opts(|o| o.after_connect(|conn, _| Box::pin(pin_plans(conn))));
    }
    let timeout = spec.connect_timeout;
    let connect = Database::connect(opts);
    let db = match tokio::time::timeout(timeout + Duration::from_secs(1), connect).await {
        Ok(r) => r,
        Err(_) => Err(DbErr::Custom(format!(
            "timed out after {}s",
            timeout.as_secs()
        ))),
    }
    .map_err(|source| DbError::Connect {
        url: redact(url),
        source,
    })?;
    // Fail at start, not on the first query, when the server is unreachable.
    db.ping().await.map_err(|source| DbError::Connect {
        url: redact(url),
        source,
    })?;
    Ok(db)
}

/// Connects the read pool with the configured pool size and timeouts (on a SQLite file with
/// the server settings described in the module documentation).
pub async fn connect(config: &Config) -> Result<DatabaseConnection, DbError> {
    let url = with_sqlite_defaults(&config.database_url);
    let is_sqlite = url.starts_with("sqlite:");
    let timeout = Duration::from_secs(config.database.connect_timeout_secs);
    let spec = PoolSpec {
        writer: false,
        max_connections: config
            .database
            .max_connections
            .unwrap_or(if is_sqlite { 5 } else { 10 }),
        connect_timeout: timeout,
        acquire_timeout: timeout,
    };
    open_pool(&url, spec).await
}

/// The connection the sources' write transactions run on. For a SQLite file: a second pool
/// of exactly one connection with the same settings as `read` (SQLite allows one writer at a
/// time; queueing for this connection replaces failing on the file lock). For PostgreSQL,
/// and for an in-memory SQLite database (a second pool would be another database), `read`
/// itself.
pub async fn connect_writer(
    config: &Config,
    read: &DatabaseConnection,
) -> Result<DatabaseConnection, DbError> {
    let url = with_sqlite_defaults(&config.database_url);
    if !is_sqlite_file(&url) {
        return Ok(read.clone());
    }
    let timeout = Duration::from_secs(config.database.connect_timeout_secs);
    let spec = PoolSpec {
        writer: true,
        max_connections: 1,
        connect_timeout: timeout,
        acquire_timeout: timeout.max(WRITER_ACQUIRE_TIMEOUT),
    };
    open_pool(&url, spec).await
}

/// The advisory lock key every Orrery process takes to migrate ("orrery" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6f72_7265_7279;

/// Applies every pending migration.
///
/// On PostgreSQL the migrations run in one transaction holding an advisory lock, so replicas
/// started together migrate one after the other (the later ones find nothing to do) instead
/// of racing on the same `CREATE TABLE`s.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Migrator::up(db, None).await.map_err(DbError::Migrate);
    }
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let txn = db.begin().await.map_err(DbError::Migrate)?;
    txn.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await
    .map_err(DbError::Migrate)?;
    Migrator::up(&txn, None).await.map_err(DbError::Migrate)?;
    txn.commit().await.map_err(DbError::Migrate)
}

/// Applies pending migrations one at a time, calling `step(done, total, name)` before each
/// one and `step(total, total, "")` at the end; the number applied.
pub async fn migrate_stepwise(
    db: &DatabaseConnection,
    mut step: impl FnMut(u64, u64, &str),
) -> Result<u64, DbError> {
    let pending: Vec<String> = Migrator::get_pending_migrations(db)
        .await
        .map_err(DbError::Migrate)?
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let total = pending.len() as u64;
    for (i, name) in pending.iter().enumerate() {
        step(i as u64, total, name);
        Migrator::up(db, Some(1)).await.map_err(DbError::Migrate)?;
    }
    step(total, total, "");
    Ok(total)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn sqlite_files_are_created() {
        assert_eq!(
            with_sqlite_defaults("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(with_sqlite_defaults("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            with_sqlite_defaults("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }

    #[test]
    fn only_sqlite_files_get_server_settings() {
        assert!(is_sqlite_file("sqlite://a.db?mode=rwc"));
        assert!(!is_sqlite_file("sqlite::memory:"));
        assert!(!is_sqlite_file("sqlite://a.db?mode=memory"));
        assert!(!is_sqlite_file("postgres://u@h/db"));
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let dir =
                std::env::temp_dir().join(format!("orrery-db-test-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config_for(url: String) -> Config {
        Config {
            database_url: url,
            ..Config::default()
        }
    }

    async fn pragma_text<C: ConnectionTrait>(db: &C, name: &str) -> String {
        let stmt = Statement::from_string(db.get_database_backend(), format!("PRAGMA {name}"));
        let row = db.query_one_raw(stmt).await.unwrap().unwrap();
        row.try_get_by_index::<String>(0).unwrap()
    }

    async fn pragma_int<C: ConnectionTrait>(db: &C, name: &str) -> i64 {
        let stmt = Statement::from_string(db.get_database_backend(), format!("PRAGMA {name}"));
        let row = db.query_one_raw(stmt).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn assert_server_settings<C: ConnectionTrait>(db: &C, which: &str) {
        assert_eq!(pragma_text(db, "journal_mode").await, "wal", "{which}");
        assert_eq!(pragma_int(db, "synchronous").await, 1, "{which}: NORMAL");
        assert_eq!(pragma_int(db, "foreign_keys").await, 1, "{which}");
        assert!(pragma_int(db, "busy_timeout").await > 0, "{which}");
    }

    async fn count<C: ConnectionTrait>(db: &C) -> i64 {
        let stmt = Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) FROM t");
        let row = db.query_one_raw(stmt).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    #[tokio::test]
    async fn sqlite_file_is_a_server_database() {
        let dir = TempDir::new();
        let config = config_for(format!("sqlite://{}", dir.0.join("orrery.db").display()));
        let read = connect(&config).await.unwrap();
        let writer = connect_writer(&config, &read).await.unwrap();

        // Every connection of the read pool: hold three at once, ask each.
        let held = [
            read.begin().await.unwrap(),
            read.begin().await.unwrap(),
            read.begin().await.unwrap(),
        ];
        for (i, txn) in held.iter().enumerate() {
            assert_server_settings(txn, &format!("read connection {i}")).await;
        }
        drop(held);
        assert_server_settings(&writer, "writer").await;

        writer
            .execute_unprepared("CREATE TABLE t (x INTEGER NOT NULL); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        // A long write transaction stays open on the writer, large enough to spill the page
        // cache (without WAL that takes the exclusive lock and shuts readers out)...
        let txn = writer.begin().await.unwrap();
        txn.execute_unprepared(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
             INSERT INTO t SELECT length(randomblob(1000)) FROM n",
        )
        .await
        .unwrap();
        // ...and readers still answer at once, from the last committed state.
        let seen = tokio::time::timeout(Duration::from_secs(2), count(&read))
            .await
            .expect("a reader waited for the open write transaction");
        assert_eq!(seen, 1);
        txn.commit().await.unwrap();
        assert_eq!(count(&read).await, 5001);

        // The other way round: an open read transaction does not hold up the writer's commit.
        let snapshot = read.begin().await.unwrap();
        assert_eq!(count(&snapshot).await, 5001);
        tokio::time::timeout(
            Duration::from_secs(2),
            writer.execute_unprepared("INSERT INTO t VALUES (2)"),
        )
        .await
        .expect("the writer waited for an open read transaction")
        .unwrap();
        assert_eq!(count(&snapshot).await, 5001, "readers keep their snapshot");
        snapshot.commit().await.unwrap();
        assert_eq!(count(&read).await, 5002);

        assert!(
            dir.0.join("orrery.db-wal").exists(),
            "the WAL sits next to the file"
        );

        writer.close().await.unwrap();
        read.close().await.unwrap();
    }

    /// Whether SQLITE_DBCONFIG_ENABLE_QPSG is on for a connection of `db`'s pool.
    async fn plans_pinned(db: &DatabaseConnection) -> bool {
        let mut conn = db.get_sqlite_connection_pool().acquire().await.unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        let raw = handle.as_raw_handle();
        let mut on: std::ffi::c_int = -1;
        // SAFETY: a locked live handle; -1 leaves the setting as is and writes it to `on`.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_db_config(
                raw.as_ptr(),
                libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
                -1 as std::ffi::c_int,
                &mut on as *mut std::ffi::c_int,
            )
        };
        assert_eq!(rc, libsqlite3_sys::SQLITE_OK);
        on == 1
    }

    #[tokio::test]
    async fn sqlite_statements_keep_their_plans() {
        let dir = TempDir::new();
        let config = config_for(format!("sqlite://{}", dir.0.join("orrery.db").display()));
        let read = connect(&config).await.unwrap();
        let writer = connect_writer(&config, &read).await.unwrap();
        assert!(plans_pinned(&read).await, "read pool");
        assert!(plans_pinned(&writer).await, "writer");
    }

    #[tokio::test]
    async fn in_memory_writer_is_the_read_pool() {
        let config = config_for("sqlite::memory:".to_string());
        let read = connect(&config).await.unwrap();
        let writer = connect_writer(&config, &read).await.unwrap();
        writer
            .execute_unprepared("CREATE TABLE t (x INTEGER NOT NULL); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        assert_eq!(count(&read).await, 1, "same database");
    }
}
