//! UTXOracle: a BTC/USD price estimated from on-chain output amounts alone.
//!
//! Our own Rust implementation of the algorithm of `UTXOracle.py` version 9.1 ("RPC
//! only"), public repository `Unbesteveable/UTXOracle`, commit
//! b9a3d91d84e7286cbd5378716d89013b736594bc (see `shared/design/utxoracle.md`). Pure and
//! deterministic: no I/O, no clock, no randomness. Steps:
//!
//! 1. [`filter`]: keep transactions with <= 5 inputs, exactly 2 outputs, not coinbase, no
//!    `OP_RETURN`, small witnesses, not spending a transaction seen earlier in the same
//!    set of blocks; count outputs with 1e-5 < BTC < 1e5.
//! 2. [`histogram`]: 2401 log bins (200 per decade from 1e-6 BTC), zero out-of-range bins,
//!    smooth round-BTC bins, normalise, cap at 0.008.
//! 3. [`stencil`]: slide the smooth and spike stencils to get a rough price.
//! 4. [`refine`]: price points from round USD amounts, central point within +-5%, MAD.
//! 5. [`confidence`]: our own 0..1 confidence (the reference has none).
//!
//! Blocks are fed one at a time, in chain order, to a [`DayAccumulator`] (daily mode:
//! all blocks of one UTC day, chosen by the caller) or a [`RollingWindow`] (recent mode:
//! the last N blocks, 144 in the reference). Only compact per-block data is kept: counted
//! output amounts in sats and 64-bit txid keys.
//!
//! Deliberate differences from the reference:
//! - txids are remembered as 64-bit keys (see [`seen`]); a collision (~3e-14 per lookup)
//!   could only drop one transaction;
//! - the final price is returned unrounded (`f64`); the reference prints `int(price)`;
//! - where the reference would crash (no outputs, all-zero histogram, no price point near
//!   the rough price) we return an [`EstimateError`]; below
//!   [`EstimatorConfig::min_qualifying_outputs`] we refuse to estimate at all;
//! - a confidence and an `is_valid` flag are added;
//! - block selection (which blocks make a day, waiting 6 blocks past midnight) is the
//!   caller's job.

pub mod confidence;
pub mod filter;
pub mod histogram;
pub mod refine;
pub mod seen;
pub mod stencil;
pub mod types;

#[cfg(test)]
mod synthetic_tests;

use std::collections::VecDeque;

pub use filter::BlockSummary;
pub use types::{Block, Tx, TxIn, TxOut, Txid};

use filter::summarise_block;
use histogram::Histogram;
use seen::SeenTxids;

/// Number of blocks of the reference's recent mode (`-rb`).
pub const RECENT_BLOCKS: usize = 144;

/// Tunables that are ours (the reference has none of these).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorConfig {
    /// Fewer qualifying outputs than this gives [`EstimateError::InsufficientData`].
    /// Default 1000: a real day has tens of thousands; 1000 is roughly one hour of blocks.
    pub min_qualifying_outputs: usize,
    /// An estimate is valid only if its confidence is at least this. Default 0.3.
    pub min_confidence: f64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            min_qualifying_outputs: 1000,
            min_confidence: 0.3,
        }
    }
}

/// A price estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Final price, USD per BTC (the reference's `central_price`).
    pub price_usd: f64,
    /// Rough price from the stencil slide, whole USD.
    pub rough_price_usd: f64,
    /// Counted outputs of kept transactions.
    pub qualifying_outputs: usize,
    /// Price points within +-10% of the final price (those the MAD is taken over).
    pub price_points: usize,
    /// Median absolute deviation (USD) of those price points from the final price.
    pub mad_usd: f64,
    /// Our confidence in [0, 1] (see [`confidence`]).
    pub confidence: f64,
    /// Number of blocks the estimate covers.
    pub blocks: usize,
    /// `confidence >= EstimatorConfig::min_confidence`.
    pub is_valid: bool,
}

/// Why no estimate could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EstimateError {
    /// Too few qualifying outputs to estimate.
    #[error("too few qualifying outputs: {outputs}, need at least {required}")]
    InsufficientData {
        /// Qualifying outputs available.
        outputs: usize,
        /// Configured minimum.
        required: usize,
    },
    /// The histogram carries no signal (nothing in range, or all stencil scores zero).
    #[error("no price signal in the histogram of {outputs} outputs")]
    NoSignal {
        /// Qualifying outputs available.
        outputs: usize,
    },
    /// No price point lies within +-5% of the rough price.
    #[error("no price point within 5% of the rough price {rough_price_usd}")]
    NoPricePoints {
        /// The rough price found by the stencil slide.
        rough_price_usd: f64,
    },
}

/// Runs steps 3..6 on a set of counted output amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimator {
    /// Configuration.
    pub config: EstimatorConfig,
}

impl Estimator {
    /// An estimator with this configuration.
    pub fn new(config: EstimatorConfig) -> Self {
        Self { config }
    }

    /// Estimates the price from counted output amounts (sats) covering `blocks` blocks.
    pub fn estimate(&self, outputs_sats: &[u64], blocks: usize) -> Result<Estimate, EstimateError> {
        let outputs = outputs_sats.len();
        if outputs == 0 || outputs < self.config.min_qualifying_outputs {
            return Err(EstimateError::InsufficientData {
                outputs,
                required: self.config.min_qualifying_outputs,
            });
        }
        let hist = Histogram::from_sats(outputs_sats.iter().copied())
            .normalised()
            .ok_or(EstimateError::NoSignal { outputs })?;
        let rough = stencil::rough_price(&hist).ok_or(EstimateError::NoSignal { outputs })?;
        let refined =
            refine::refine(outputs_sats, rough.price_usd).ok_or(EstimateError::NoPricePoints {
                rough_price_usd: rough.price_usd,
            })?;
        let confidence = confidence::confidence(
            refined.price_usd,
            refined.mad_usd,
            refined.points_in_mad_range,
        );
        Ok(Estimate {
            price_usd: refined.price_usd,
            rough_price_usd: rough.price_usd,
            qualifying_outputs: outputs,
            price_points: refined.points_in_mad_range,
            mad_usd: refined.mad_usd,
            confidence,
            blocks,
            is_valid: confidence >= self.config.min_confidence,
        })
    }
}

/// Accumulates the blocks of one day (or any fixed set), fed one at a time in chain order.
#[derive(Debug, Clone, Default)]
pub struct DayAccumulator {
    estimator: Estimator,
    seen: SeenTxids,
    outputs: Vec<u64>,
    blocks: usize,
}

impl DayAccumulator {
    /// An empty accumulator with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty accumulator with this configuration.
    pub fn with_config(config: EstimatorConfig) -> Self {
        Self {
            estimator: Estimator::new(config),
            ..Self::default()
        }
    }

    /// Adds the next block (chain order matters for the same-day spend filter).
    pub fn add_block(&mut self, block: &Block) {
        let summary = summarise_block(block, self.blocks as u64, &mut self.seen);
        // Every `dependent` output spends a transaction of this day: excluded for good.
        self.outputs.extend_from_slice(&summary.outputs);
        self.blocks += 1;
    }

    /// Blocks added so far.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Counted output amounts (sats) so far.
    pub fn qualifying_outputs(&self) -> &[u64] {
        &self.outputs
    }

    /// Estimates the price from the blocks added so far.
    pub fn estimate(&self) -> Result<Estimate, EstimateError> {
        self.estimator.estimate(&self.outputs, self.blocks)
    }
}

/// The last `capacity` blocks, fed one at a time in chain order. Equivalent to running a
/// [`DayAccumulator`] over exactly the blocks currently held: an output excluded because
/// it spends a transaction of an older block counts again once that block leaves.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    estimator: Estimator,
    capacity: usize,
    blocks: VecDeque<BlockSummary>,
    seen: SeenTxids,
    next_seq: u64,
}

impl RollingWindow {
    /// A window of the last `capacity` blocks (at least 1) with the default configuration.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(capacity, EstimatorConfig::default())
    }

    /// A window of the last `capacity` blocks (at least 1) with this configuration.
    pub fn with_config(capacity: usize, config: EstimatorConfig) -> Self {
        let capacity = capacity.max(1);
        Self {
            estimator: Estimator::new(config),
            capacity,
            blocks: VecDeque::with_capacity(capacity + 1),
            seen: SeenTxids::new(),
            next_seq: 0,
        }
    }

    /// Maximum number of blocks held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks currently held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Height of the newest block held.
    pub fn tip_height(&self) -> Option<u64> {
        self.blocks.back().map(|b| b.height)
    }

    /// Appends the next block; returns the oldest block's summary if it was evicted.
    pub fn push_block(&mut self, block: &Block) -> Option<BlockSummary> {
        let summary = summarise_block(block, self.next_seq, &mut self.seen);
        self.next_seq += 1;
        self.blocks.push_back(summary);
        if self.blocks.len() > self.capacity {
            let old = self.blocks.pop_front()?;
            self.seen.forget_block(&old.txid_keys, old.seq);
            return Some(old);
        }
        None
    }

    /// Removes the newest block (for a reorg); evicted older blocks do not come back.
    /// A txid that also appeared in an older held block (possible only for the historical
    /// duplicate coinbases or a 64-bit key collision) is forgotten too.
    pub fn pop_newest(&mut self) -> Option<BlockSummary> {
        let newest = self.blocks.pop_back()?;
        self.seen.forget_block(&newest.txid_keys, newest.seq);
        Some(newest)
    }

    /// Summaries of the blocks currently held, oldest first.
    pub fn summaries(&self) -> impl Iterator<Item = &BlockSummary> {
        self.blocks.iter()
    }

    /// Counted output amounts (sats) of the blocks currently held.
    pub fn qualifying_outputs(&self) -> Vec<u64> {
        let Some(front_seq) = self.blocks.front().map(|b| b.seq) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in &self.blocks {
            out.extend_from_slice(&b.outputs);
            out.extend(
                b.dependent
                    .iter()
                    .filter(|d| d.depends_on_seq < front_seq)
                    .map(|d| d.sats),
            );
        }
        out
    }

    /// Estimates the price from the blocks currently held.
    pub fn estimate(&self) -> Result<Estimate, EstimateError> {
        self.estimator
            .estimate(&self.qualifying_outputs(), self.blocks.len())
    }
}
