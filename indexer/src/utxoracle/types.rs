//! Input types of the estimator: a minimal, source-independent view of Bitcoin blocks.
//!
//! These carry only what the UTXOracle filters need (reference: `UTXOracle.py` v9.1,
//! `Unbesteveable/UTXOracle` commit b9a3d91d, step 6). Sources (RPC, Esplora, raw blocks)
//! convert into them; nothing here knows about any wire format.

/// A transaction id. Any fixed byte order works, as long as [`Tx::txid`] and
/// [`TxIn::prev_txid`] use the same one.
pub type Txid = [u8; 32];

/// One transaction input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxIn {
    /// Id of the transaction whose output this input spends.
    pub prev_txid: Txid,
    /// Sizes in bytes of this input's witness stack items (empty for non-segwit inputs).
    pub witness_item_sizes: Vec<usize>,
}

/// One transaction output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOut {
    /// Amount in satoshis.
    pub value_sats: u64,
    /// Whether the output script starts with `OP_RETURN` (0x6a).
    pub is_op_return: bool,
}

/// One transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    /// This transaction's id (same byte order as [`TxIn::prev_txid`]).
    pub txid: Txid,
    /// Whether this is the block's coinbase transaction.
    pub is_coinbase: bool,
    /// Inputs in order.
    pub inputs: Vec<TxIn>,
    /// Outputs in order.
    pub outputs: Vec<TxOut>,
}

/// One block, with its transactions in block order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Block height.
    pub height: u64,
    /// Block header time, unix seconds.
    pub time: i64,
    /// Transactions in block order (the order matters for the same-window spend filter).
    pub txs: Vec<Tx>,
}
