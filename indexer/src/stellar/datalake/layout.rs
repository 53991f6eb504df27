//! The SEP-54 (Ledger Metadata Storage) layout, as written by Galexie: a JSON config value
//! (`.config.json`) beside the ledger objects `<partition>/<batch>.xdr.zst`.
//!
//! Partition and batch names start with 8 upper-case hex digits of `0xFFFFFFFF - first
//! ledger` (so a listing returns the newest first), then `--<first>` and, for ranges of
//! more than one ledger, `-<last>`. The partition directory is left out when
//! `batchesPerPartition` is 1. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// Name of the config object at the root of the ledgers path.
pub const CONFIG_KEY: &str = ".config.json";

/// The store's JSON config (`.config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    /// Network the ledgers belong to (SAC contract ids derive from it).
    pub network_passphrase: String,
    /// Layout version (`1.0`, ...).
    #[serde(default)]
    pub version: String,
    /// Compression of every object: only `zstd` exists.
    pub compression: String,
    /// Ledgers in one object.
    pub ledgers_per_batch: u32,
    /// Objects in one partition directory.
    pub batches_per_partition: u32,
}

/// Why a config value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Not the JSON of a config.
    #[error("{key}: not a SEP-54 config: {error}")]
    Json {
        /// Object key.
        key: String,
        /// Parser message.
        error: String,
    },
    /// A value we cannot read.
    #[error("{key}: {what}")]
    Unsupported {
        /// Object key.
        key: String,
        /// What is wrong.
        what: String,
    },
}

impl Schema {
    /// Parses and checks the config object `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, SchemaError> {
        let s: Schema = serde_json::from_slice(bytes).map_err(|e| SchemaError::Json {
            key: key.to_string(),
            error: e.to_string(),
        })?;
        let bad = |what: String| SchemaError::Unsupported {
            key: key.to_string(),
            what,
        };
        if !s.compression.eq_ignore_ascii_case("zstd") {
            return Err(bad(format!(
                "compression {:?}: only zstd is supported",
                s.compression
            )));
        }
        if s.ledgers_per_batch == 0 || s.batches_per_partition == 0 {
            return Err(bad(
                "ledgersPerBatch and batchesPerPartition must be positive".into(),
            ));
        }
        if u64::from(s.ledgers_per_batch) * u64::from(s.batches_per_partition) > 1 << 32 {
            return Err(bad("a partition larger than the ledger range".into()));
        }
        if s.network_passphrase.is_empty() {
            return Err(bad("networkPassphrase is empty".into()));
        }
        Ok(s)
    }

    /// Ledgers in one partition.
    pub fn partition_size(&self) -> u64 {
        u64::from(self.ledgers_per_batch) * u64::from(self.batches_per_partition)
    }

    /// First ledger of the object holding `ledger`.
    pub fn batch_start(&self, ledger: u32) -> u32 {
        ledger - ledger % self.ledgers_per_batch
    }

    /// Last ledger of the object starting at `start` (the range never wraps).
    pub fn batch_end(&self, start: u32) -> u32 {
        start.saturating_add(self.ledgers_per_batch - 1)
    }

    /// Key of the object holding `ledger`, relative to the ledgers path.
    pub fn object_key(&self, ledger: u32) -> String {
        let start = self.batch_start(ledger);
        let file = format!("{}.xdr.zst", range_name(start, self.batch_end(start)));
        if self.batches_per_partition == 1 {
            return file;
        }
        let size = self.partition_size();
        let p_start = (u64::from(ledger) / size * size) as u32;
        let p_end = (u64::from(p_start) + size - 1).min(u64::from(u32::MAX)) as u32;
        format!("{}/{file}", range_name(p_start, p_end))
    }
}

/// `<8 hex of 0xFFFFFFFF - start>--<start>[-<end>]`.
fn range_name(start: u32, end: u32) -> String {
    let hex = u32::MAX - start;
    if start == end {
        format!("{hex:08X}--{start}")
    } else {
        format!("{hex:08X}--{start}-{end}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(per_batch: u32, per_partition: u32) -> Schema {
        Schema {
            network_passphrase: "Test SDF Network ; September 2015".into(),
            version: "1.0".into(),
            compression: "zstd".into(),
            ledgers_per_batch: per_batch,
            batches_per_partition: per_partition,
        }
    }

    #[test]
    fn keys_follow_sep54() {
        // Published layout of the public data lake: one ledger per object, 64,000 per
        // partition.
        let s = schema(1, 64_000);
        assert_eq!(
            s.object_key(1_000_000),
            "FFF159FF--960000-1023999/FFF0BDBF--1000000.xdr.zst"
        );
        assert_eq!(
            s.object_key(63_000_123),
            "FC3F0FFF--62976000-63039999/FC3EB1C4--63000123.xdr.zst"
        );
        // Several ledgers per object; the partition directory left out at one per partition.
        assert_eq!(
            schema(200, 2).object_key(300),
            "FFFFFFFF--0-399/FFFFFF37--200-399.xdr.zst"
        );
        assert_eq!(schema(200, 1).object_key(300), "FFFFFF37--200-399.xdr.zst");
        assert_eq!(
            schema(1, 2).object_key(1),
            "FFFFFFFF--0-1/FFFFFFFE--1.xdr.zst"
        );
        assert_eq!(
            schema(50, 4).object_key(250),
            "FFFFFF37--200-399/FFFFFF05--250-299.xdr.zst"
        );
        let s = schema(64, 10);
        assert_eq!((s.batch_start(130), s.batch_end(128)), (128, 191));
        assert_eq!(s.batch_end(u32::MAX - 3), u32::MAX);
    }

    #[test]
    fn config_is_read_not_assumed() {
        let json = br#"{"networkPassphrase":"Public Global Stellar Network ; September 2015",
            "version":"1.0","compression":"zstd","ledgersPerBatch":1,"batchesPerPartition":64000}"#;
        let s = Schema::parse(CONFIG_KEY, json).unwrap();
        assert_eq!((s.ledgers_per_batch, s.batches_per_partition), (1, 64_000));
        for bad in [
            &br#"{"networkPassphrase":"x","compression":"gzip","ledgersPerBatch":1,"batchesPerPartition":1}"#[..],
            br#"{"networkPassphrase":"x","compression":"zstd","ledgersPerBatch":0,"batchesPerPartition":1}"#,
            br#"{"networkPassphrase":"","compression":"zstd","ledgersPerBatch":1,"batchesPerPartition":1}"#,
            br#"{"compression":"zstd"}"#,
            b"not json",
        ] {
            let err = Schema::parse(CONFIG_KEY, bad).unwrap_err();
            assert!(err.to_string().starts_with(CONFIG_KEY), "{err}");
        }
    }
}
