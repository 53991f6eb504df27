//! Database-backed runtime configuration (the seeds' `config` table): typed values,
//! validated on write, with defaults seeded at start.
//!
//! The file/env configuration says how to start; this table holds what operators tune at
//! run time (thresholds, batch sizes, budgets), readable by every replica.

use chrono::Utc;
use orrery_entity::config_entry;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};

/// The type a config value must parse as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// Any text.
    String,
    /// A signed 64-bit integer.
    Integer,
    /// A decimal number (kept as written, validated by parsing).
    Decimal,
    /// `true` or `false`.
    Boolean,
    /// Any JSON document.
    Json,
    /// A duration in seconds, written as an integer or with a unit: `30s`, `10m`, `1h`, `1d`.
    Duration,
}

impl ConfigType {
    /// The name stored in the `value_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::String => "string",
            ConfigType::Integer => "integer",
            ConfigType::Decimal => "decimal",
            ConfigType::Boolean => "boolean",
            ConfigType::Json => "json",
            ConfigType::Duration => "duration",
        }
    }

    /// Parses a stored or user-given type name.
    pub fn parse(s: &str) -> Result<Self, ConfigStoreError> {
        Ok(match s {
            "string" => ConfigType::String,
            "integer" => ConfigType::Integer,
            "decimal" => ConfigType::Decimal,
            "boolean" => ConfigType::Boolean,
            "json" => ConfigType::Json,
            "duration" => ConfigType::Duration,
            other => {
                return Err(ConfigStoreError::UnknownType {
                    value_type: other.to_string(),
                })
            }
        })
    }

    /// Validates `value` and returns its normalised text form.
    pub fn normalize(self, key: &str, value: &str) -> Result<String, ConfigStoreError> {
        let bad = |reason: &str| ConfigStoreError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            value_type: self.as_str(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        match self {
            ConfigType::String => Ok(value.to_string()),
            ConfigType::Integer => v
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| bad("not an integer")),
            ConfigType::Decimal => v
                .parse::<rust_decimal::Decimal>()
                .map(|d| d.normalize().to_string())
                .map_err(|_| bad("not a decimal number")),
            ConfigType::Boolean => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok("true".into()),
                "false" | "0" | "no" | "off" => Ok("false".into()),
                _ => Err(bad("expected true or false")),
            },
            ConfigType::Json => serde_json::from_str::<serde_json::Value>(v)
                .map(|j| j.to_string())
                .map_err(|e| bad(&format!("not JSON ({e})"))),
            ConfigType::Duration => parse_duration_secs(v)
                .map(|s| s.to_string())
                .ok_or_else(|| bad("expected seconds or a number with s/m/h/d")),
        }
    }
}

/// Parses `90`, `90s`, `10m`, `2h`, `1d` into seconds.
pub fn parse_duration_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.chars().last()? {
        's' => (&v[..v.len() - 1], 1),
        'm' => (&v[..v.len() - 1], 60),
        'h' => (&v[..v.len() - 1], 3600),
        'd' => (&v[..v.len() - 1], 86_400),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Why a config read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigStoreError {
    /// The value does not parse as the key's type.
    #[error("config {key}: {value:?} is not a valid {value_type}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The rejected value.
        value: String,
        /// The key's type.
        value_type: &'static str,
        /// Why.
        reason: String,
    },
    /// An unknown type name.
    #[error("unknown config type {value_type:?} (expected string, integer, decimal, boolean, json or duration)")]
    UnknownType {
        /// The given name.
        value_type: String,
    },
    /// A new key was given no type.
    #[error("config {key} does not exist yet: give its type")]
    MissingType {
        /// The key.
        key: String,
    },
    /// A key that is not `lowercase.dotted_words`.
    #[error("config key {key:?} is malformed: use lowercase letters, digits, '_' and '.'")]
    BadKey {
        /// The key.
        key: String,
    },
    /// The type of an existing key cannot be changed by a set.
    #[error("config {key} is a {existing}, not a {requested}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// Its stored type.
        existing: String,
        /// The type asked for.
        requested: &'static str,
    },
    /// The database failed.
    #[error("config store database error: {0}")]
    Db(#[from] DbErr),
}

/// The `updated_by` of a row [`seed_defaults`] wrote: nobody has chosen its value yet.
pub const SEED_ACTOR: &str = "default";

/// Defaults seeded at start (only where the key is absent): the seeds' runbook values.
pub const DEFAULTS: &[(&str, &str, ConfigType, &str)] = &[
    ("sync.batch_size", "200", ConfigType::Integer, "Records per upstream page (Horizon max 200); until an operator sets it, stellar.page_size applies"),
    ("stellar.rate_limit", "3000", ConfigType::Integer, "Horizon requests per hour (0 = no local budget); until an operator sets it, stellar.requests_per_hour applies"),
    ("sync.stall_timeout", "30m", ConfigType::Duration, "A source whose height has not moved for this long while its head has is unhealthy and restarted"),
    ("oracle.min_confidence", "0.3", ConfigType::Decimal, "UTXOracle comparisons below this confidence are invalid"),
    ("oracle.min_price_usd", "10000", ConfigType::Decimal, "UTXOracle prices below this are invalid"),
    ("oracle.max_price_usd", "500000", ConfigType::Decimal, "UTXOracle prices above this are invalid"),
    ("alerts.sync_lag_blocks", "100", ConfigType::Integer, "Sync lag (blocks/ledgers) above which a source is degraded"),
];

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// Inserts every default whose key is absent; existing values are never overwritten.
pub async fn seed_defaults<C: ConnectionTrait>(db: &C) -> Result<(), ConfigStoreError> {
    // Insert-or-ignore in one statement: replicas starting together never collide, and a
    // row an operator already set is never touched.
    let rows = DEFAULTS
        .iter()
        .map(|(key, value, ty, description)| config_entry::ActiveModel {
            key: Set(key.to_string()),
            value: Set(value.to_string()),
            value_type: Set(ty.as_str().to_string()),
            description: Set(Some(description.to_string())),
            updated_at: Set(Utc::now()),
            updated_by: Set(Some(SEED_ACTOR.to_string())),
        });
    config_entry::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([config_entry::Column::Key])
        .exec(db)
        .await?;
    Ok(())
}

/// One entry.
pub async fn get<C: ConnectionTrait>(
    db: &C,
    key: &str,
) -> Result<Option<config_entry::Model>, ConfigStoreError> {
    Ok(config_entry::Entity::find_by_id(key.to_string())
        .one(db)
        .await?)
}

/// Entries whose key starts with `prefix`, in key order.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    prefix: Option<&str>,
) -> Result<Vec<config_entry::Model>, ConfigStoreError> {
    let mut q = config_entry::Entity::find().order_by_asc(config_entry::Column::Key);
    if let Some(p) = prefix {
        q = q.filter(config_entry::Column::Key.starts_with(p));
    }
    Ok(q.all(db).await?)
}

/// Sets `key` to `value` after validating it against the key's type (or `value_type` for a
/// new key). Returns the entry before and after.
pub async fn set<C: ConnectionTrait>(
    db: &C,
    key: &str,
    value: &str,
    value_type: Option<ConfigType>,
    description: Option<&str>,
    actor: &str,
) -> Result<(Option<config_entry::Model>, config_entry::Model), ConfigStoreError> {
    if !valid_key(key) {
        return Err(ConfigStoreError::BadKey {
            key: key.to_string(),
        });
    }
    let before = get(db, key).await?;
    let ty = match (&before, value_type) {
        (Some(existing), Some(requested)) if existing.value_type != requested.as_str() => {
            return Err(ConfigStoreError::TypeMismatch {
                key: key.to_string(),
                existing: existing.value_type.clone(),
                requested: requested.as_str(),
            })
        }
        (Some(existing), _) => ConfigType::parse(&existing.value_type)?,
        (None, Some(t)) => t,
        (None, None) => {
            return Err(ConfigStoreError::MissingType {
                key: key.to_string(),
            })
        }
    };
    let normalized = ty.normalize(key, value)?;
    let description = description
        .map(str::to_string)
        .or_else(|| before.as_ref().and_then(|b| b.description.clone()));
    let model = config_entry::ActiveModel {
        key: Set(key.to_string()),
        value: Set(normalized),
        value_type: Set(ty.as_str().to_string()),
        description: Set(description),
        updated_at: Set(Utc::now()),
        updated_by: Set(Some(actor.to_string())),
    };
    let after = if before.is_some() {
        model.update(db).await?
    } else {
        model.insert(db).await?
    };
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_validated_and_normalised() {
        assert_eq!(ConfigType::Integer.normalize("k", " 42 ").unwrap(), "42");
        assert!(ConfigType::Integer.normalize("k", "4.2").is_err());
        assert_eq!(ConfigType::Decimal.normalize("k", "0.300").unwrap(), "0.3");
        assert_eq!(ConfigType::Boolean.normalize("k", "YES").unwrap(), "true");
        assert!(ConfigType::Boolean.normalize("k", "maybe").is_err());
        assert_eq!(
            ConfigType::Json.normalize("k", "{ \"a\": 1 }").unwrap(),
            "{\"a\":1}"
        );
        assert_eq!(ConfigType::Duration.normalize("k", "30m").unwrap(), "1800");
        assert!(ConfigType::Duration.normalize("k", "soon").is_err());
        let err = ConfigType::Integer
            .normalize("sync.batch_size", "lots")
            .unwrap_err();
        assert!(err.to_string().contains("sync.batch_size"));
    }

    #[test]
    fn keys_and_types_are_checked() {
        assert!(valid_key("oracle.min_confidence"));
        assert!(!valid_key("Bad Key"));
        assert!(ConfigType::parse("float").is_err());
        for (k, v, t, _) in DEFAULTS {
            assert!(valid_key(k));
            t.normalize(k, v).unwrap();
        }
    }
}
