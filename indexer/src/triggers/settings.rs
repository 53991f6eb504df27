//! `[triggers]` settings: the action workers' lease, concurrency and delivery timeout, and how
//! long finished `action_run` rows are kept.

use std::time::Duration;

use serde::Deserialize;

use super::worker::WorkerSettings;

/// Trigger action workers (`[triggers]` in `orrery.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggerSettings {
    /// Seconds after which a `running` row is presumed abandoned (its worker crashed) and is
    /// claimed again (`triggers.lease_secs`, default 20). Must exceed
    /// `delivery_timeout_secs`, or a slow delivery would run twice.
    pub lease_secs: u64,
    /// Deliveries in flight per process (`triggers.concurrency`, default 8, at least 1).
    pub concurrency: usize,
    /// Timeout of one delivery (webhook POST), in seconds (`triggers.delivery_timeout_secs`,
    /// default 5, at least 1).
    pub delivery_timeout_secs: u64,
    /// Days a finished (`succeeded` or `dead`) `action_run` row is kept after its last
    /// update; older ones are deleted by a periodic task (`triggers.retention_days`,
    /// default 30; 0 keeps them forever).
    pub retention_days: u32,
    /// Seconds between two runs of that prune (`triggers.prune_interval_secs`, default 3600,
    /// at least 1).
    pub prune_interval_secs: u64,
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            lease_secs: 20,
            concurrency: 8,
            delivery_timeout_secs: 5,
            retention_days: 30,
            prune_interval_secs: 3600,
        }
    }
}

impl TriggerSettings {
    /// Checks the ranges; the error names the key (as written in `orrery.toml`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(("triggers.concurrency", "must be between 1 and 1024".into()));
        }
        if self.delivery_timeout_secs == 0 || self.delivery_timeout_secs > 3600 {
            return Err((
                "triggers.delivery_timeout_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if self.lease_secs <= self.delivery_timeout_secs || self.lease_secs > 86_400 {
            return Err((
                "triggers.lease_secs",
                format!(
                    "must exceed triggers.delivery_timeout_secs ({}) and be at most 86400",
                    self.delivery_timeout_secs
                ),
            ));
        }
        if self.retention_days > 36_500 {
            return Err((
                "triggers.retention_days",
                "must be at most 36500 (0 keeps rows forever)".into(),
            ));
        }
        if self.prune_interval_secs == 0 || self.prune_interval_secs > 86_400 {
            return Err((
                "triggers.prune_interval_secs",
                "must be between 1 and 86400".into(),
            ));
        }
        Ok(())
    }

    /// The retention as a duration; `None` when rows are kept forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400))
    }

    /// The worker settings these stand for (the rest at their defaults).
    pub fn worker_settings(&self) -> WorkerSettings {
        WorkerSettings {
            lease: Duration::from_secs(self.lease_secs),
            concurrency: self.concurrency,
            delivery_timeout: Duration::from_secs(self.delivery_timeout_secs),
            retention: self.retention(),
            prune_interval: Duration::from_secs(self.prune_interval_secs),
            ..WorkerSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_former_constants_and_valid() {
        let s = TriggerSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let w = s.worker_settings();
        assert_eq!(w.lease, Duration::from_secs(20));
        assert_eq!(w.concurrency, 8);
        assert_eq!(w.delivery_timeout, Duration::from_secs(5));
        assert_eq!(w.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(w.prune_interval, Duration::from_secs(3600));
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let bad = |f: fn(&mut TriggerSettings)| {
            let mut s = TriggerSettings::default();
            f(&mut s);
            s.validate().unwrap_err().0
        };
        assert_eq!(bad(|s| s.concurrency = 0), "triggers.concurrency");
        assert_eq!(
            bad(|s| s.delivery_timeout_secs = 0),
            "triggers.delivery_timeout_secs"
        );
        assert_eq!(bad(|s| s.lease_secs = 5), "triggers.lease_secs");
        assert_eq!(
            bad(|s| s.retention_days = 40_000),
            "triggers.retention_days"
        );
        assert_eq!(
            bad(|s| s.prune_interval_secs = 0),
            "triggers.prune_interval_secs"
        );
    }

    #[test]
    fn zero_retention_keeps_rows_forever() {
        let s = TriggerSettings {
            retention_days: 0,
            ..TriggerSettings::default()
        };
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.worker_settings().retention, None);
    }
}
