//! Opening the database and applying migrations.

use std::time::Duration;

use orrery_migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::Config;

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

/// Connects with the configured pool size and timeouts.
pub async fn connect(config: &Config) -> Result<DatabaseConnection, DbError> {
    let url = with_sqlite_defaults(&config.database_url);
    let is_sqlite = url.starts_with("sqlite:");
    let max = config
        .database
        .max_connections
        .unwrap_or(if is_sqlite { 5 } else { 10 });
    let timeout = Duration::from_secs(config.database.connect_timeout_secs);
    let mut opts = ConnectOptions::new(url.clone());
    opts.max_connections(max)
        .min_connections(1)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false);
    let connect = Database::connect(opts);
    let db = match tokio::time::timeout(timeout + Duration::from_secs(1), connect).await {
        Ok(r) => r,
        Err(_) => Err(DbErr::Custom(format!(
            "timed out after {}s",
            timeout.as_secs()
        ))),
    }
    .map_err(|source| DbError::Connect {
        url: redact(&url),
        source,
    })?;
    // Fail at start, not on the first query, when the server is unreachable.
    db.ping().await.map_err(|source| DbError::Connect {
        url: redact(&url),
        source,
    })?;
    Ok(db)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    Migrator::up(db, None).await.map_err(DbError::Migrate)
}

#[cfg(test)]
mod tests {
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
}
