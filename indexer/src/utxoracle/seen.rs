//! The set of transaction ids seen so far in a window of blocks.
//!
//! The reference (`UTXOracle.py` v9.1, step 6, `todays_txids`) drops a transaction if any
//! input spends a transaction seen earlier in the same set of blocks. We remember, for each
//! txid, the sequence number of the (latest) block that contained it, so that a rolling
//! window can forget a block cheaply.
//!
//! Deliberate difference from the reference: txids are stored as a 64-bit key (their first
//! 8 bytes) instead of the full 32 bytes, which cuts memory about 4x. Txids are hashes, so
//! a false match needs a 64-bit prefix collision (probability about n/2^64 per lookup,
//! ~3e-14 for a day); its only effect would be to drop one transaction.

use std::collections::HashMap;

use super::types::Txid;

/// Compact key of a txid: its first 8 bytes, little-endian.
pub fn txid_key(txid: &Txid) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&txid[..8]);
    u64::from_le_bytes(bytes)
}

/// Txid keys seen in the current window, each mapped to the sequence number of the latest
/// block that contained it.
#[derive(Debug, Default, Clone)]
pub struct SeenTxids {
    latest_block: HashMap<u64, u64>,
}

impl SeenTxids {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that block `seq` contains a transaction with this key.
    pub fn insert(&mut self, key: u64, seq: u64) {
        self.latest_block.insert(key, seq);
    }

    /// The sequence number of the latest block containing this key, if any.
    pub fn block_of(&self, key: u64) -> Option<u64> {
        self.latest_block.get(&key).copied()
    }

    /// Forgets the keys of block `seq` (a key later re-seen in a newer block is kept).
    pub fn forget_block(&mut self, keys: &[u64], seq: u64) {
        for key in keys {
            if self.latest_block.get(key) == Some(&seq) {
                self.latest_block.remove(key);
            }
        }
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.latest_block.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.latest_block.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_keeps_keys_reseen_later() {
        let mut seen = SeenTxids::new();
        seen.insert(1, 0);
        seen.insert(2, 0);
        seen.insert(2, 1);
        seen.forget_block(&[1, 2], 0);
        assert_eq!(seen.block_of(1), None);
        assert_eq!(seen.block_of(2), Some(1));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn key_uses_first_eight_bytes() {
        let mut a = [0u8; 32];
        a[0] = 1;
        let mut b = a;
        b[31] = 9;
        assert_eq!(txid_key(&a), 1);
        assert_eq!(txid_key(&a), txid_key(&b));
    }
}
