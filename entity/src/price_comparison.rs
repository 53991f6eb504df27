//! `price_comparison`: UTXOracle versus exchange price at one time.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One comparison of the on-chain estimate with the exchange price.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "price_comparison")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Comparison time (unique).
    #[sea_orm(unique)]
    pub at: DateTimeUtc,
    /// Pair, e.g. `BTC/USD`.
    #[sea_orm(column_type = "Text")]
    pub pair: String,
    /// UTXOracle estimate.
    pub utxoracle_price: Option<f64>,
    /// Exchange price.
    pub exchange_price: Option<f64>,
    /// `utxoracle_price - exchange_price`.
    pub diff: Option<f64>,
    /// Difference in percent of the exchange price.
    pub diff_percent: Option<f64>,
    /// Confidence of the estimate.
    pub confidence: Option<f64>,
    /// Whether the comparison is meaningful.
    pub is_valid: bool,
    /// Why it is not valid.
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// Last update time.
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
