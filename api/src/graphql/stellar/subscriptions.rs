//! Stellar subscriptions: balances, operations and distributions as they change.

use async_graphql::{Context, Result, Subscription};
use futures::{Stream, StreamExt};
use orrery_entity::{distribution, stellar_balance, stellar_operation};
use orrery_indexer::bus::{topics, Payload};
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
        // The payload is the committed row: the same `From` as the `balances` query.
        Ok(bus_stream(ctx, topics::STELLAR_BALANCE_CHANGED, move |e| {
            let Payload::StellarBalanceChanged(row) = e.payload else {
                return None;
            };
            if row.account_id != account {
                return None;
            }
            if let Some(a) = &asset {
                if a.code != row.asset_code || a.issuer != row.asset_issuer {
                    return None;
                }
            }
            Some(StellarBalance::from(stellar_balance::Model::from(row)))
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
            match e.payload {
                Payload::StellarOperationIndexed(p) if p.account_id == account => {
                    Some(p.operation_id)
                }
                _ => None,
            }
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
            let Payload::DistributionUpdated(row) = e.payload else {
                return None;
            };
            match id {
                Some(i) if i != row.id => None,
                _ => Some(Distribution::from(distribution::Model::from(row))),
            }
        })
    }
}
