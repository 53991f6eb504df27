//! Reconciliation of event-built balances against the ledger entries the node serves
//! (`getLedgerEntries`: the account entry for lumens, trustline entries for credit assets).
//! The checks are stored per account and asset in `balance_reconciliation` (see
//! [`crate::stellar::reconciliation`]), which `balanceReconciliation` reports.

use stellar_xdr::{Asset, LedgerKey, LedgerKeyAccount, LedgerKeyTrustLine, TrustLineAsset};

use super::batch::Ledgerbook;
use super::decode::{entry_balance, DecodeError};
use super::sac::SacAsset;
use super::types::EntriesPage;
use super::xdr::{account_key, encode, StrkeyError, XdrError};
use crate::stellar::horizon::AssetKey;
use crate::stellar::reconciliation::BalanceCheck;

/// The base64 ledger keys of `account`'s entries for `assets` (the account entry for XLM,
/// a trustline per credit asset the account does not issue).
pub fn keys_for(account: &str, assets: &[SacAsset]) -> Result<Vec<String>, KeyError> {
    let key = account_key(account)?;
    let id = stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(
        stellar_xdr::Uint256(key),
    ));
    let mut out = Vec::new();
    for a in assets {
        let k = match &a.asset {
            Asset::Native => LedgerKey::Account(LedgerKeyAccount {
                account_id: id.clone(),
            }),
            _ if a.key.issuer == account => continue,
            Asset::CreditAlphanum4(c) => LedgerKey::Trustline(LedgerKeyTrustLine {
                account_id: id.clone(),
                asset: TrustLineAsset::CreditAlphanum4(c.clone()),
            }),
            Asset::CreditAlphanum12(c) => LedgerKey::Trustline(LedgerKeyTrustLine {
                account_id: id.clone(),
                asset: TrustLineAsset::CreditAlphanum12(c.clone()),
            }),
        };
        out.push(encode(&k)?);
    }
    Ok(out)
}

/// Why keys could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a `G...` account.
    #[error(transparent)]
    Strkey(#[from] StrkeyError),
    /// Encoding failed.
    #[error(transparent)]
    Xdr(#[from] XdrError),
}

/// The outcome for one account: `None` when it could not be compared at `scanned` (an
/// entry changed after the ledger the events were read through), else its checks (one per
/// asset: `expected` the ledger entry, `actual` the event-built balance).
pub type Outcome = Option<Vec<BalanceCheck>>;

/// Compares `accounts`' balances in `book` (loaded) with `page`, read while the events
/// were applied through ledger `scanned`.
pub fn compare(
    accounts: &[String],
    assets: &[SacAsset],
    book: &Ledgerbook,
    page: &EntriesPage,
    scanned: i64,
) -> Result<Vec<(String, Outcome)>, DecodeError> {
    let mut found: std::collections::HashMap<(String, AssetKey), (i64, u32)> =
        std::collections::HashMap::new();
    for e in &page.entries {
        let b = entry_balance(e)?;
        found.insert((b.account, b.asset), (b.balance, b.last_modified_ledger));
    }
    let stable = i64::from(page.latest_ledger) <= scanned;
    let mut out = Vec::with_capacity(accounts.len());
    for account in accounts {
        let mut checks = Vec::new();
        let mut comparable = true;
        for a in assets {
            if !a.key.issuer.is_empty() && a.key.issuer == *account {
                continue;
            }
            let ours = book.get(account, &a.key);
            let theirs = match found.get(&(account.clone(), a.key.clone())) {
                Some((b, modified)) if i64::from(*modified) <= scanned => *b,
                Some(_) => {
                    comparable = false;
                    break;
                }
                None if stable => 0,
                None => {
                    comparable = false;
                    break;
                }
            };
            checks.push(BalanceCheck {
                asset: a.key.clone(),
                expected: theirs,
                actual: ours,
            });
        }
        out.push((account.clone(), comparable.then_some(checks)));
    }
    Ok(out)
}
