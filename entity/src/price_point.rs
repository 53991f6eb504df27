//! `price_point`: one price observation of a pair from one source.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One price observation.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "price_point")]
pub struct Model {
    /// Auto-increment id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Pair, e.g. `BTC/USD`.
    #[sea_orm(column_type = "Text")]
    pub pair: String,
    /// `UTXORACLE` | `EXCHANGE` | `STELLAR_DEX`.
    #[sea_orm(column_type = "Text")]
    pub source: String,
    /// Observation time.
    pub at: DateTimeUtc,
    /// Price (statistical estimate).
    pub price: f64,
    /// Confidence in [0, 1], when the source provides one.
    pub confidence: Option<f64>,
    /// Volume behind the estimate.
    pub volume: Option<f64>,
    /// Source-specific details.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub details: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
