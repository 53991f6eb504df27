//! Stellar subscriptions: balances, operations and distributions as they change.

use async_graphql::{Context, Result, Subscription};
use futures::{Stream, StreamExt};
use orrery_entity::{distribution, stellar_operation};
use orrery_indexer::bus::topics;
use orrery_indexer::stellar::horizon::AssetKey;
use sea_orm::EntityTrait;

use super::types::{parse_asset, Distribution, StellarBalance, StellarOperation};
use crate::graphql::context::state;
use crate::graphql::subscription::bus_stream;

/// Stellar subscriptions.
#[derive(Default)]
pub struct StellarSubscription;

#[Subscription]
impl StellarSubscription {
    /// A balance of `account` changed (optionally only in `asset`).
    async fn balance_changed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] account: String,
        #[graphql(desc = "`XLM` or `CODE:ISSUER`; all assets when omitted.")] asset: Option<String>,
    ) -> Result<impl Stream<Item = async_graphql::Result<StellarBalance>>> {
        let asset = asset.map(|a| parse_asset("asset", &a)).transpose()?;
        Ok(bus_stream(ctx, topics::STELLAR_BALANCE_CHANGED, move |e| {
            let p = &e.payload;
            let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
            let code = s("asset_code")?;
            let issuer = s("asset_issuer").unwrap_or_default();
            if s("account_id")? != account {
                return None;
            }
            if let Some(a) = &asset {
                if a.code != code || a.issuer != issuer {
                    return None;
                }
            }
            let key = AssetKey {
                code: code.clone(),
                issuer: issuer.clone(),
            };
            Some(StellarBalance {
                account_id: account.clone(),
                asset_type: key.asset_type().into(),
                asset_code: code,
                asset_issuer: issuer,
                balance: s("balance")?,
                limit: None,
                last_modified_ledger: None,
            })
        }))
    }

    /// An operation of `account` was indexed (live following).
    async fn operation_indexed(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`G...` account id.")] account: String,
    ) -> impl Stream<Item = async_graphql::Result<StellarOperation>> {
        let db = state(ctx).db.clone();
        bus_stream(ctx, topics::STELLAR_OPERATION_INDEXED, move |e| {
            let p = &e.payload;
            (p.get("account_id")?.as_str()? == account)
                .then(|| p.get("operation_id")?.as_str()?.parse::<i64>().ok())
                .flatten()
        })
        .then(move |item| {
            let db = db.clone();
            async move {
                match item {
                    Err(missed) => Some(Err(missed)),
                    Ok(id) => match stellar_operation::Entity::find_by_id(id).one(&db).await {
                        Ok(Some(row)) => Some(Ok(StellarOperation::from(row))),
                        // Rolled back before it could be read: nothing to send.
                        Ok(None) => None,
                        Err(e) => Some(Err(crate::graphql::error::internal(
                            "reading an indexed operation",
                            e,
                        ))),
                    },
                }
            }
        })
        .filter_map(futures::future::ready)
    }

    /// Distribution `id` changed (status, rules).
    async fn distribution_updated(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Distribution id; all distributions when omitted.")] id: Option<i64>,
    ) -> impl Stream<Item = async_graphql::Result<Distribution>> {
        bus_stream(ctx, topics::DISTRIBUTION_UPDATED, move |e| {
            let row: distribution::Model = serde_json::from_value(e.payload).ok()?;
            match id {
                Some(i) if i != row.id => None,
                _ => Some(Distribution::from(row)),
            }
        })
    }
}
