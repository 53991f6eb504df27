//! Which transactions and outputs count (reference: `UTXOracle.py` v9.1, step 6,
//! `Unbesteveable/UTXOracle` commit b9a3d91d).
//!
//! A transaction is kept only if it is not coinbase, has at most 5 inputs and exactly 2
//! outputs, no `OP_RETURN` output, no witness item over 500 bytes and no input whose
//! witness totals over 500 bytes, and no input spending a transaction seen earlier in the
//! same set of blocks (earlier blocks, or earlier in the same block). Every transaction,
//! kept or not, is added to the seen set before its own inputs are checked, as in the
//! reference. Within a kept transaction an output counts if 1e-5 < BTC < 1e5.

use super::seen::{txid_key, SeenTxids};
use super::types::{Block, Tx, TxIn};

/// Most inputs a kept transaction may have.
pub const MAX_INPUTS: usize = 5;
/// Exact number of outputs a kept transaction must have.
pub const REQUIRED_OUTPUTS: usize = 2;
/// Largest witness item, and largest witness total per input, in bytes.
pub const MAX_WITNESS_BYTES: usize = 500;
/// An output counts only above this many sats (1e-5 BTC, exclusive).
pub const MIN_COUNTED_SATS_EXCLUSIVE: u64 = 1_000;
/// An output counts only below this many sats (1e5 BTC, exclusive).
pub const MAX_COUNTED_SATS_EXCLUSIVE: u64 = 10_000_000_000_000;

/// Why a transaction was not kept (first failing check in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Coinbase transaction.
    Coinbase,
    /// More than [`MAX_INPUTS`] inputs.
    TooManyInputs,
    /// Not exactly [`REQUIRED_OUTPUTS`] outputs.
    WrongOutputCount,
    /// An output script is `OP_RETURN`.
    OpReturn,
    /// A witness item, or an input's witness total, exceeds [`MAX_WITNESS_BYTES`].
    WitnessTooLarge,
    /// An input spends a transaction seen earlier in the same set of blocks.
    SpendsSameWindowTx,
}

/// Whether an input's witness breaks the 500-byte limits (per item or per-input total).
pub fn witness_exceeds(input: &TxIn) -> bool {
    let mut total = 0usize;
    input.witness_item_sizes.iter().any(|&size| {
        total = total.saturating_add(size);
        size > MAX_WITNESS_BYTES || total > MAX_WITNESS_BYTES
    })
}

/// All checks that depend on the transaction alone (everything but the same-window spend).
pub fn check_shape(tx: &Tx) -> Result<(), Rejection> {
    if tx.is_coinbase {
        return Err(Rejection::Coinbase);
    }
    if tx.inputs.len() > MAX_INPUTS {
        return Err(Rejection::TooManyInputs);
    }
    if tx.outputs.len() != REQUIRED_OUTPUTS {
        return Err(Rejection::WrongOutputCount);
    }
    if tx.outputs.iter().any(|o| o.is_op_return) {
        return Err(Rejection::OpReturn);
    }
    if tx.inputs.iter().any(witness_exceeds) {
        return Err(Rejection::WitnessTooLarge);
    }
    Ok(())
}

/// Whether an output of a kept transaction counts: 1e-5 < BTC < 1e5 (both exclusive).
pub fn output_counts(value_sats: u64) -> bool {
    value_sats > MIN_COUNTED_SATS_EXCLUSIVE && value_sats < MAX_COUNTED_SATS_EXCLUSIVE
}

/// An output of a shape-valid transaction that spends a transaction of an earlier (or the
/// same) block in the window: it is excluded while block `depends_on_seq` is in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependentOutput {
    /// Sequence number of the newest in-window block holding a spent transaction.
    pub depends_on_seq: u64,
    /// Output amount in sats.
    pub sats: u64,
}

/// What the estimator keeps of one block: counted output amounts and txid keys, not txs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSummary {
    /// Block height.
    pub height: u64,
    /// Block time, unix seconds.
    pub time: i64,
    /// Position of this block in its accumulator (0, 1, 2, ... in push order).
    pub seq: u64,
    /// Keys ([`txid_key`]) of every transaction in the block.
    pub txid_keys: Vec<u64>,
    /// Counted output amounts (sats) of kept transactions.
    pub outputs: Vec<u64>,
    /// Outputs of shape-valid transactions excluded only by the same-window spend rule.
    pub dependent: Vec<DependentOutput>,
}

/// Applies the filters to `block` (block number `seq` of its window), recording its txids
/// in `seen`. `seen` must already hold the txids of the window's earlier blocks.
pub fn summarise_block(block: &Block, seq: u64, seen: &mut SeenTxids) -> BlockSummary {
    let mut summary = BlockSummary {
        height: block.height,
        time: block.time,
        seq,
        txid_keys: Vec::with_capacity(block.txs.len()),
        outputs: Vec::new(),
        dependent: Vec::new(),
    };
    for tx in &block.txs {
        let key = txid_key(&tx.txid);
        summary.txid_keys.push(key);
        seen.insert(key, seq);
        if check_shape(tx).is_err() {
            continue;
        }
        let depends_on = tx
            .inputs
            .iter()
            .filter_map(|input| seen.block_of(txid_key(&input.prev_txid)))
            .max();
        let counted = tx
            .outputs
            .iter()
            .map(|o| o.value_sats)
            .filter(|&sats| output_counts(sats));
        match depends_on {
            None => summary.outputs.extend(counted),
            Some(depends_on_seq) => summary
                .dependent
                .extend(counted.map(|sats| DependentOutput {
                    depends_on_seq,
                    sats,
                })),
        }
    }
    summary
}

/// Classifies one transaction against `seen` without recording it (for diagnostics/tests).
pub fn classify(tx: &Tx, seen: &SeenTxids) -> Result<(), Rejection> {
    check_shape(tx)?;
    if tx
        .inputs
        .iter()
        .any(|input| seen.block_of(txid_key(&input.prev_txid)).is_some())
    {
        return Err(Rejection::SpendsSameWindowTx);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utxoracle::types::TxOut;

    fn id(n: u8) -> [u8; 32] {
        let mut t = [0u8; 32];
        t[0] = n;
        t[5] = 0xAB;
        t
    }

    fn input(prev: u8, witness: &[usize]) -> TxIn {
        TxIn {
            prev_txid: id(prev),
            witness_item_sizes: witness.to_vec(),
        }
    }

    fn out(sats: u64) -> TxOut {
        TxOut {
            value_sats: sats,
            is_op_return: false,
        }
    }

    fn good_tx(n: u8) -> Tx {
        Tx {
            txid: id(n),
            is_coinbase: false,
            inputs: vec![input(200, &[72, 33])],
            outputs: vec![out(50_000), out(1_234_567)],
        }
    }

    #[test]
    fn accepts_plain_two_output_tx() {
        assert_eq!(check_shape(&good_tx(1)), Ok(()));
        assert_eq!(classify(&good_tx(1), &SeenTxids::new()), Ok(()));
    }

    #[test]
    fn rejects_coinbase() {
        let mut tx = good_tx(1);
        tx.is_coinbase = true;
        assert_eq!(check_shape(&tx), Err(Rejection::Coinbase));
    }

    #[test]
    fn rejects_more_than_five_inputs() {
        let mut tx = good_tx(1);
        tx.inputs = (0..5).map(|i| input(100 + i, &[])).collect();
        assert_eq!(check_shape(&tx), Ok(()));
        tx.inputs.push(input(120, &[]));
        assert_eq!(check_shape(&tx), Err(Rejection::TooManyInputs));
    }

    #[test]
    fn rejects_output_count_other_than_two() {
        let mut tx = good_tx(1);
        tx.outputs.push(out(10_000));
        assert_eq!(check_shape(&tx), Err(Rejection::WrongOutputCount));
        tx.outputs.truncate(1);
        assert_eq!(check_shape(&tx), Err(Rejection::WrongOutputCount));
    }

    #[test]
    fn rejects_op_return() {
        let mut tx = good_tx(1);
        tx.outputs[1] = TxOut {
            value_sats: 0,
            is_op_return: true,
        };
        assert_eq!(check_shape(&tx), Err(Rejection::OpReturn));
    }

    #[test]
    fn witness_limits_per_item_and_per_input_total() {
        assert!(!witness_exceeds(&input(1, &[500])));
        assert!(witness_exceeds(&input(1, &[501])));
        assert!(!witness_exceeds(&input(1, &[250, 250])));
        assert!(witness_exceeds(&input(1, &[250, 251])));
        // The total is per input: two inputs of 400 bytes each are fine.
        let mut tx = good_tx(1);
        tx.inputs = vec![input(100, &[400]), input(101, &[400])];
        assert_eq!(check_shape(&tx), Ok(()));
        tx.inputs.push(input(102, &[300, 300]));
        assert_eq!(check_shape(&tx), Err(Rejection::WitnessTooLarge));
    }

    #[test]
    fn counted_output_range_is_exclusive() {
        assert!(!output_counts(1_000));
        assert!(output_counts(1_001));
        assert!(output_counts(9_999_999_999_999));
        assert!(!output_counts(10_000_000_000_000));
    }

    #[test]
    fn rejects_spend_of_tx_seen_earlier_in_window() {
        let mut seen = SeenTxids::new();
        let parent = good_tx(7);
        let first = summarise_block(
            &Block {
                height: 1,
                time: 0,
                txs: vec![parent],
            },
            0,
            &mut seen,
        );
        assert_eq!(first.outputs, vec![50_000, 1_234_567]);

        let mut child = good_tx(8);
        child.inputs = vec![input(7, &[])];
        assert_eq!(classify(&child, &seen), Err(Rejection::SpendsSameWindowTx));

        // Same block, earlier position: also excluded; later position: not.
        let mut parent2 = good_tx(9);
        parent2.outputs[0] = out(77_000);
        let mut child2 = good_tx(10);
        child2.inputs = vec![input(9, &[])];
        let mut spends_later = good_tx(11);
        spends_later.inputs = vec![input(12, &[])];
        let later = good_tx(12);
        let second = summarise_block(
            &Block {
                height: 2,
                time: 600,
                txs: vec![child, parent2, child2, spends_later, later],
            },
            1,
            &mut seen,
        );
        // parent2, spends_later and later count; child and child2 are dependent.
        assert_eq!(second.outputs.len(), 6);
        assert_eq!(
            second
                .dependent
                .iter()
                .map(|d| d.depends_on_seq)
                .collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
        assert_eq!(second.txid_keys.len(), 5);
    }

    #[test]
    fn coinbase_txids_are_seen_too() {
        let mut seen = SeenTxids::new();
        let mut coinbase = good_tx(3);
        coinbase.is_coinbase = true;
        let mut spender = good_tx(4);
        spender.inputs = vec![input(3, &[])];
        let s = summarise_block(
            &Block {
                height: 5,
                time: 0,
                txs: vec![coinbase, spender],
            },
            0,
            &mut seen,
        );
        assert!(s.outputs.is_empty());
        assert_eq!(s.dependent.len(), 2);
    }
}
