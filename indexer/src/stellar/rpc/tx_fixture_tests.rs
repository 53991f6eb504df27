//! The operations decoder ([`super::operations`]) and the ledger decoder over every recorded
//! `getTransactions` / `getTransaction` / `getLedgers` response in
//! `../shared/fixtures/stellar-rpc/` (read in place): each record's rows are checked field
//! by field against what the record states (hash, ledger, application order, close time,
//! status, fee, operation count) and against the XDR itself (every operation's source,
//! type and amount; every ledger's transaction set hashing to its results).

use serde_json::Value;
use stellar_xdr::{
    GeneralizedTransactionSet, LedgerCloseMeta, OperationBody, TransactionEnvelope,
    TransactionPhase, TxSetComponent,
};

use super::decode::{decode_ledger, decode_tx};
use super::operations::{decode_record, operation_toid, transaction_toid, RpcTx};
use super::sac::{network_id, MAINNET_PASSPHRASE, TESTNET_PASSPHRASE};
use super::types::{LedgersPage, TransactionsPage, TxInfo};
use crate::stellar::amount::format_stroops;

const LOCAL_PASSPHRASE: &str = "Standalone Network ; February 2017";

fn json(name: &str) -> Value {
    let path = format!(
        "{}/../../shared/fixtures/stellar-rpc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("recorded fixture {path} is missing: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn derived<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(json(&format!("derived/{name}"))).expect("decodes")
}

fn result<T: serde::de::DeserializeOwned>(name: &str) -> T {
    super::client::decode_answer("fixture", json(name)).expect("decodes")
}

/// Decodes `t` and checks every row against the record and its XDR.
fn check(t: &TxInfo, passphrase: &str) -> RpcTx {
    let tx = decode_record(t, passphrase).unwrap_or_else(|e| panic!("{:?}: {e}", t.tx_hash));
    let d = decode_tx(t, passphrase).unwrap();
    if let Some(h) = &t.tx_hash {
        assert_eq!(&tx.row.hash, h);
    }
    assert_eq!(tx.row.ledger, i64::from(t.ledger));
    assert_eq!(tx.row.created_at.timestamp(), t.created_at);
    assert_eq!(tx.row.successful, t.status == "SUCCESS");
    assert_eq!(tx.row.fee_charged, d.result.fee_charged);
    assert_eq!(
        tx.row.paging_token,
        transaction_toid(t.ledger, t.application_order).to_string()
    );
    let (tx_source, ops) = match &d.envelope {
        TransactionEnvelope::Tx(e) => (e.tx.source_account.clone(), e.tx.operations.to_vec()),
        TransactionEnvelope::TxFeeBump(f) => {
            let stellar_xdr::FeeBumpTransactionInnerTx::Tx(e) = &f.tx.inner_tx;
            assert!(t.fee_bump);
            (e.tx.source_account.clone(), e.tx.operations.to_vec())
        }
        TransactionEnvelope::TxV0(_) => panic!("no V0 envelopes in the fixtures"),
    };
    assert_eq!(tx.row.operation_count as usize, ops.len());
    assert_eq!(tx.ops.len(), ops.len());
    let g = |m: &stellar_xdr::MuxedAccount| match m {
        stellar_xdr::MuxedAccount::Ed25519(k) => super::xdr::account_strkey(k.0),
        stellar_xdr::MuxedAccount::MuxedEd25519(m) => super::xdr::account_strkey(m.ed25519.0),
    };
    assert_eq!(tx.row.source_account, g(&tx_source));
    for (i, (row, op)) in tx.ops.iter().zip(&ops).enumerate() {
        assert_eq!(row.id, operation_toid(t.ledger, t.application_order, i));
        assert_eq!(row.paging_token, row.id.to_string());
        assert_eq!(row.transaction_hash, tx.row.hash);
        assert_eq!(row.successful, tx.row.successful);
        assert_eq!(row.created_at, tx.row.created_at);
        let src = op.source_account.as_ref().map_or(g(&tx_source), g);
        assert_eq!(row.source_account, src);
        assert_eq!(row.raw["type_i"], op.body.discriminant() as i32);
        match &op.body {
            OperationBody::Payment(p) => {
                assert_eq!(row.op_type, "payment");
                assert_eq!(row.amount, Some(p.amount));
                assert_eq!(row.to.as_deref(), Some(g(&p.destination).as_str()));
            }
            OperationBody::CreateAccount(c) => {
                assert_eq!(row.op_type, "create_account");
                assert_eq!(row.amount, Some(c.starting_balance));
            }
            OperationBody::InvokeHostFunction(_) => {
                assert_eq!(row.op_type, "invoke_host_function");
                assert_eq!(row.amount, None);
            }
            OperationBody::ManageSellOffer(o) => {
                assert_eq!(row.op_type, "manage_sell_offer");
                assert_eq!(row.raw["amount"], format_stroops(o.amount));
            }
            OperationBody::ManageBuyOffer(o) => {
                assert_eq!(row.op_type, "manage_buy_offer");
                assert_eq!(row.raw["amount"], format_stroops(o.buy_amount));
            }
            _ => assert!(!row.op_type.is_empty()),
        }
    }
    assert!(tx.disagreements.is_empty(), "{:?}", tx.disagreements);
    tx
}

#[test]
fn get_transactions_fixtures_decode_into_horizon_rows() {
    let mut n = 0;
    for name in [
        "stellar_stellar-docs_examples_Transactions.json__GetTransactionsResult.getTransactions.result.json",
        "stellar_stellar-docs_examples_Transactions.json__GetTransactionsResultUsingCursor.getTransactions.result.json",
    ] {
        let page: TransactionsPage = derived(name);
        for t in &page.transactions {
            check(t, TESTNET_PASSPHRASE);
            n += 1;
        }
    }
    let rs: TransactionsPage =
        result("stellar_rs-stellar-rpc-client_src_fixtures_transactions_response.json");
    for t in &rs.transactions {
        let tx = check(t, TESTNET_PASSPHRASE);
        n += 1;
        if t.fee_bump {
            // The fee bump's inner transaction is the one whose operations are stored.
            assert!(!tx.ops.is_empty());
        }
    }
    for (name, pass) in [
        (
            "stellar_rs-stellar-rpc-client_src_fixtures_transaction_response_p22.json",
            LOCAL_PASSPHRASE,
        ),
        (
            "stellar_rs-stellar-rpc-client_src_fixtures_transaction_response_p23.json",
            LOCAL_PASSPHRASE,
        ),
    ] {
        let t: TxInfo = result(name);
        check(&t, pass);
        n += 1;
    }
    for name in [
        "stellar_stellar-docs_examples_Transactions.json__SuccessTransactionResult.getTransaction.result.json",
        "stellar_stellar-docs_examples_Transactions.json__FailedTransactionResult.getTransaction.result.json",
    ] {
        let t: TxInfo = derived(name);
        let tx = check(&t, TESTNET_PASSPHRASE);
        assert_eq!(tx.row.successful, name.contains("Success"));
        n += 1;
    }
    let corpus = json("stellar_js-stellar-sdk_test_fixtures_rpc-corpus_transactions.json");
    for r in corpus["records"].as_array().unwrap() {
        let s = |k: &str| r[k].as_str().unwrap().to_string();
        let t = TxInfo {
            status: "SUCCESS".into(),
            tx_hash: Some(s("txHash")),
            application_order: r["applicationOrder"].as_u64().unwrap_or(1) as u32,
            fee_bump: s("envelopeXdr").starts_with("AAAABQ"),
            envelope_xdr: s("envelopeXdr"),
            result_xdr: s("resultXdr"),
            result_meta_xdr: s("resultMetaXdr"),
            ledger: r["ledger"].as_u64().unwrap_or(63_800_108) as u32,
            created_at: r["createdAt"]
                .as_i64()
                .or_else(|| r["createdAt"].as_str().and_then(|c| c.parse().ok()))
                .unwrap_or(1_754_000_000),
            events: None,
        };
        check(&t, MAINNET_PASSPHRASE);
        n += 1;
    }
    assert!(n > 20, "{n} records");
}

/// Envelopes of a close meta's transaction set.
fn set_envelopes(meta: &LedgerCloseMeta) -> Vec<TransactionEnvelope> {
    let set = match meta {
        LedgerCloseMeta::V0(m) => return m.tx_set.txs.to_vec(),
        LedgerCloseMeta::V1(m) => &m.tx_set,
        LedgerCloseMeta::V2(m) => &m.tx_set,
    };
    let GeneralizedTransactionSet::V1(s) = set;
    let mut out = Vec::new();
    for phase in s.phases.iter() {
        match phase {
            TransactionPhase::V0(comps) => {
                for c in comps.iter() {
                    let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                    out.extend(c.txs.iter().cloned());
                }
            }
            TransactionPhase::V1(p) => {
                for stage in p.execution_stages.iter() {
                    for cluster in stage.iter() {
                        out.extend(cluster.iter().cloned());
                    }
                }
            }
        }
    }
    out
}

fn result_hashes(meta: &LedgerCloseMeta) -> Vec<[u8; 32]> {
    match meta {
        LedgerCloseMeta::V0(m) => m
            .tx_processing
            .iter()
            .map(|p| p.result.transaction_hash.0)
            .collect(),
        LedgerCloseMeta::V1(m) => m
            .tx_processing
            .iter()
            .map(|p| p.result.transaction_hash.0)
            .collect(),
        LedgerCloseMeta::V2(m) => m
            .tx_processing
            .iter()
            .map(|p| p.result.transaction_hash.0)
            .collect(),
    }
}

#[test]
fn get_ledgers_fixtures_decode_field_by_field() {
    let page: LedgersPage = derived(
        "stellar_stellar-docs_examples_Ledgers.json__GetLedgersResult.getLedgers.result.json",
    );
    assert_eq!(
        (page.latest_ledger, page.oldest_ledger, page.cursor.as_str()),
        (36_379, 29_312, "36234")
    );
    for (name, pass) in [
        (
            "stellar_stellar-docs_examples_Ledgers.json__GetLedgersResult.getLedgers.result.json",
            TESTNET_PASSPHRASE,
        ),
        (
            "stellar_js-stellar-sdk_test_unit_server_soroban_get_ledgers.test.ts__mockLedgerResult.getLedgers.result.json",
            TESTNET_PASSPHRASE,
        ),
    ] {
        let page: LedgersPage = derived(name);
        for l in &page.ledgers {
            let d = decode_ledger(l).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                d.header.header.scp_value.close_time.0 as i64,
                l.ledger_close_time,
                "{name}: close time"
            );
            // Every transaction of the set has its result, under the hash of its envelope.
            let hashes = result_hashes(&d.meta);
            let envelopes = set_envelopes(&d.meta);
            assert_eq!(envelopes.len(), hashes.len(), "{name}: {}", l.sequence);
            let mut computed: Vec<[u8; 32]> = envelopes
                .iter()
                .filter_map(|e| e.hash(network_id(pass)).ok())
                .collect();
            let mut given = hashes.clone();
            computed.sort_unstable();
            given.sort_unstable();
            if !given.is_empty() {
                assert_eq!(computed, given, "{name}: ledger {} hashes", l.sequence);
            }
        }
    }
}
