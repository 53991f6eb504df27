//! Stellar balances to compare: devnet's own ledger entries against what Orrery stored
//! (the RPC and data-lake paths derive them from token events or entry changes).

use std::collections::BTreeMap;

use orrery_devnet::Devnet;
use orrery_entity::stellar_balance;
use sea_orm::{DatabaseConnection, EntityTrait};

/// `(account, code, issuer) -> stroops`.
pub type Balances = BTreeMap<(String, String, String), i64>;

/// devnet's ledger entries (zero balances and the genesis root, whose starting lumens
/// predate every event, left out).
pub fn expected(d: &Devnet) -> Balances {
    let c = d.control();
    let root = c.stellar_accounts().first().cloned();
    let mut out = BTreeMap::new();
    for a in c.stellar_accounts() {
        if Some(&a) == root.as_ref() {
            continue;
        }
        let Ok(balances) = c.balances(&a) else {
            continue;
        };
        for (asset, stroops) in balances {
            if stroops == 0 {
                continue;
            }
            let (code, issuer) = match asset.split_once(':') {
                Some((c, i)) => (c.to_string(), i.to_string()),
                None => ("XLM".to_string(), String::new()),
            };
            out.insert((a.clone(), code, issuer), stroops);
        }
    }
    out
}

/// What `db` holds, left out the same way.
pub async fn stored(db: &DatabaseConnection, d: &Devnet) -> Balances {
    let root = d.control().stellar_accounts().first().cloned();
    stellar_balance::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.balance_stroops != 0 && Some(&b.account_id) != root.as_ref())
        .map(|b| {
            (
                (b.account_id, b.asset_code, b.asset_issuer),
                b.balance_stroops,
            )
        })
        .collect()
}
