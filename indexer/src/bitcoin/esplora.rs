//! Esplora REST client: tip, headers and transaction pages, converted to estimator input.

use serde::Deserialize;
use url::Url;

use crate::sync::SourceError;
use crate::upstream::{UpstreamClient, UpstreamConfig};
use crate::utxoracle::{Block, Tx, TxIn, TxOut, Txid};

/// Transactions per `/block/:hash/txs/:start` page (fixed by Esplora).
pub const TXS_PER_PAGE: u32 = 25;

/// A block header as Esplora's `/block/:hash` returns it (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockHeader {
    /// Block hash (hex).
    pub id: String,
    /// Height.
    pub height: u64,
    /// Header time, unix seconds.
    pub timestamp: i64,
    /// Transactions in the block.
    pub tx_count: u32,
    /// Parent hash (absent for genesis).
    #[serde(default)]
    pub previousblockhash: Option<String>,
}

impl BlockHeader {
    /// Refuses a header whose stored fields would have to be guessed: a time that is no
    /// representable instant, a non-genesis block without a parent, a transaction count
    /// beyond the stored column.
    pub fn check(&self) -> Result<(), String> {
        if chrono::DateTime::from_timestamp(self.timestamp, 0).is_none() {
            return Err(format!(
                "block {}: timestamp {} is not a time",
                self.id, self.timestamp
            ));
        }
        if self.height > 0 && self.previousblockhash.is_none() {
            return Err(format!(
                "block {} at height {}: previousblockhash is missing",
                self.id, self.height
            ));
        }
        if i32::try_from(self.tx_count).is_err() || i64::try_from(self.height).is_err() {
            return Err(format!(
                "block {}: height or tx_count out of range",
                self.id
            ));
        }
        Ok(())
    }

    /// Header time (checked by [`Self::check`] when fetched).
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp(self.timestamp, 0)
    }
}

#[derive(Debug, Deserialize)]
struct EsploraVin {
    #[serde(default)]
    txid: String,
    #[serde(default)]
    is_coinbase: bool,
    #[serde(default)]
    witness: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct EsploraVout {
    #[serde(default)]
    scriptpubkey: String,
    #[serde(default)]
    scriptpubkey_type: String,
    value: u64,
}

/// A transaction as Esplora renders it (the fields the estimator needs).
#[derive(Debug, Deserialize)]
pub struct EsploraTx {
    txid: String,
    vin: Vec<EsploraVin>,
    vout: Vec<EsploraVout>,
}

fn parse_txid(s: &str) -> Result<Txid, SourceError> {
    let bad = || SourceError::Malformed(format!("bad txid {s:?}"));
    // `from_str_radix` alone would take a sign (`+f`) as a digit pair.
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Converts one Esplora transaction into the estimator's input type. Witness item sizes are
/// `hex.len() / 2`; an output is `OP_RETURN` when its type says so or its script starts `6a`.
pub fn convert_tx(tx: &EsploraTx) -> Result<Tx, SourceError> {
    let is_coinbase = tx.vin.iter().any(|i| i.is_coinbase);
    let inputs = tx
        .vin
        .iter()
        .map(|i| {
            Ok(TxIn {
                prev_txid: if i.is_coinbase {
                    [0u8; 32]
                } else {
                    parse_txid(&i.txid)?
                },
                witness_item_sizes: i
                    .witness
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|w| w.len() / 2)
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, SourceError>>()?;
    let outputs = tx
        .vout
        .iter()
        .map(|o| TxOut {
            value_sats: o.value,
            is_op_return: o.scriptpubkey_type == "op_return"
                || o.scriptpubkey.to_ascii_lowercase().starts_with("6a"),
        })
        .collect();
    Ok(Tx {
        txid: parse_txid(&tx.txid)?,
        is_coinbase,
        inputs,
        outputs,
    })
}

/// Esplora over the shared upstream client (rate limit, breaker, retries).
#[derive(Clone)]
pub struct EsploraClient {
    client: UpstreamClient,
}

impl EsploraClient {
    /// A client for the Esplora at `base_url` (upstream name `esplora`).
    pub fn new(base_url: &str, requests_per_hour: u32) -> Result<Self, SourceError> {
        Self::with_limits(
            base_url,
            requests_per_hour,
            UpstreamConfig::DEFAULT_TIMEOUT,
            UpstreamConfig::DEFAULT_BREAKER_RECOVERY,
        )
    }

    /// Same with a per-request `timeout` and the breaker's `breaker_recovery`
    /// (`bitcoin.request_timeout_secs`, `bitcoin.breaker_recovery_secs`).
    pub fn with_limits(
        base_url: &str,
        requests_per_hour: u32,
        timeout: std::time::Duration,
        breaker_recovery: std::time::Duration,
    ) -> Result<Self, SourceError> {
        let url = Url::parse(base_url)
            .map_err(|e| SourceError::Config(format!("bitcoin.esplora_url {base_url:?}: {e}")))?;
        let mut config = UpstreamConfig::new("esplora", vec![url]);
        config.requests_per_hour = requests_per_hour;
        config.burst = 50;
        config.timeout = timeout;
        config.breaker_recovery = breaker_recovery;
        Ok(Self {
            client: UpstreamClient::new(config)?,
        })
    }

    /// The underlying upstream client (for its breaker).
    pub fn upstream(&self) -> &UpstreamClient {
        &self.client
    }

    /// Height of the best tip.
    pub async fn tip_height(&self) -> Result<u64, SourceError> {
        let t = self.client.get_text("/blocks/tip/height").await?;
        t.trim()
            .parse()
            .map_err(|_| SourceError::Malformed(format!("tip height {t:?} is not a number")))
    }

    /// Hash of the best-chain block at `height`.
    pub async fn hash_at(&self, height: u64) -> Result<String, SourceError> {
        let t = self
            .client
            .get_text(&format!("/block-height/{height}"))
            .await?;
        let t = t.trim().to_string();
        parse_txid(&t)?;
        Ok(t)
    }

    /// The header of block `hash`.
    pub async fn header(&self, hash: &str) -> Result<BlockHeader, SourceError> {
        let h: BlockHeader = self.client.get_json(&format!("/block/{hash}")).await?;
        h.check().map_err(SourceError::Malformed)?;
        Ok(h)
    }

    /// Every transaction of a block, in block order (pages of 25).
    pub async fn txs(&self, header: &BlockHeader) -> Result<Vec<Tx>, SourceError> {
        let mut out = Vec::with_capacity(header.tx_count as usize);
        let mut start = 0;
        while start < header.tx_count {
            let page: Vec<EsploraTx> = self
                .client
                .get_json(&format!("/block/{}/txs/{start}", header.id))
                .await?;
            if page.is_empty() {
                return Err(SourceError::Malformed(format!(
                    "block {} page {start} is empty",
                    header.id
                )));
            }
            for t in &page {
                out.push(convert_tx(t)?);
            }
            start += TXS_PER_PAGE;
        }
        Ok(out)
    }

    /// Header and estimator block of the best-chain block at `height`.
    pub async fn block_at(&self, height: u64) -> Result<(BlockHeader, Block), SourceError> {
        let hash = self.hash_at(height).await?;
        let header = self.header(&hash).await?;
        let block = self.block_of(&header).await?;
        Ok((header, block))
    }

    /// The estimator block of `header`.
    pub async fn block_of(&self, header: &BlockHeader) -> Result<Block, SourceError> {
        Ok(Block {
            height: header.height,
            time: header.timestamp,
            txs: self.txs(header).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/esplora/mempool_cypress_fixtures_details_rbf_tx02_api_tx.json"
    );

    #[test]
    fn converts_a_recorded_esplora_transaction() {
        let text = std::fs::read_to_string(FIXTURE).expect("fixture missing");
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        let tx: EsploraTx = serde_json::from_value(raw.clone()).unwrap();
        let t = convert_tx(&tx).unwrap();
        assert_eq!(t.inputs.len(), raw["vin"].as_array().unwrap().len());
        assert_eq!(t.outputs.len(), raw["vout"].as_array().unwrap().len());
        assert!(!t.is_coinbase);
        for (o, r) in t.outputs.iter().zip(raw["vout"].as_array().unwrap()) {
            assert_eq!(o.value_sats, r["value"].as_u64().unwrap());
            assert_eq!(o.is_op_return, r["scriptpubkey_type"] == "op_return");
        }
        for (i, r) in t.inputs.iter().zip(raw["vin"].as_array().unwrap()) {
            let w: Vec<usize> = r["witness"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().len() / 2).collect())
                .unwrap_or_default();
            assert_eq!(i.witness_item_sizes, w);
            assert_eq!(
                i.prev_txid,
                parse_txid(r["txid"].as_str().unwrap()).unwrap()
            );
        }
    }

    #[test]
    fn op_return_by_script_prefix_and_bad_txids() {
        let tx: EsploraTx = serde_json::from_value(serde_json::json!({
            "txid": "00".repeat(32),
            "vin": [{"txid": "", "is_coinbase": true, "witness": null}],
            "vout": [{"scriptpubkey": "6a0401020304", "scriptpubkey_type": "unknown", "value": 0},
                     {"scriptpubkey": "0014aa", "scriptpubkey_type": "v0_p2wpkh", "value": 5}]
        }))
        .unwrap();
        let t = convert_tx(&tx).unwrap();
        assert!(t.is_coinbase);
        assert!(t.outputs[0].is_op_return);
        assert!(!t.outputs[1].is_op_return);
        assert!(parse_txid("zz").is_err());
        assert!(parse_txid(&"g".repeat(64)).is_err());
    }
}
