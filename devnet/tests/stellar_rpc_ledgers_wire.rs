//! devnet's `getLedgers` and `getTransactions` (with DEX trades): the recorded wire shapes of
//! `../shared/fixtures/stellar-rpc/` (field names, JSON types, nesting), XDR that the
//! official crate decodes, the same ledger as devnet's Horizon (transactions, trades), the
//! page limit, retention window and the injected -32603.

mod common;

use common::fixture_json;
use orrery_devnet::faults::Fault;
use orrery_devnet::stellar::rpc::PASSPHRASE;
use orrery_devnet::{Devnet, DevnetConfig, StellarConfig};
use serde_json::{json, Value};
use stellar_xdr::{
    ClaimAtom, GeneralizedTransactionSet, LedgerCloseMeta, LedgerHeaderHistoryEntry, Limits,
    ManageSellOfferResult, OperationBody, OperationResult, OperationResultTr, ReadXdr,
    TransactionEnvelope, TransactionPhase, TransactionResult, TransactionResultResult,
    TxSetComponent,
};

async fn devnet(retention: Option<u32>) -> Devnet {
    let cfg = DevnetConfig {
        stellar: StellarConfig {
            accounts: 12,
            initial_operations: 600,
            ops_per_ledger: 20,
            fee_stroops: 100,
            rpc_retention_ledgers: retention,
            ..StellarConfig::default()
        },
        evm_chains: vec![],
        ..DevnetConfig::default()
    };
    Devnet::start(cfg).await.unwrap()
}

async fn call(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Every key of `expected` (recursively, first array element) is in `got` with the same
/// JSON type.
fn same_shape(path: &str, expected: &Value, got: &Value) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert_eq!(kind(expected), kind(got), "{path}: {got}");
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                let gv = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in {got}"));
                same_shape(&format!("{path}.{k}"), ev, gv);
            }
        }
        (Value::Array(e), Value::Array(g)) => {
            if let (Some(e0), Some(g0)) = (e.first(), g.first()) {
                same_shape(&format!("{path}[0]"), e0, g0);
            }
        }
        _ => {}
    }
}

fn xdr<T: ReadXdr>(s: &Value) -> T {
    let s = s.as_str().expect("base64 string");
    T::from_xdr_base64(
        s,
        Limits {
            depth: 200,
            len: s.len(),
        },
    )
    .expect("valid XDR")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn network() -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(PASSPHRASE.as_bytes()).into()
}

fn stroops(s: &str) -> i64 {
    let (i, f) = s.split_once('.').unwrap_or((s, "0"));
    i.parse::<i64>().unwrap() * 10_000_000 + format!("{f:0<7}").parse::<i64>().unwrap()
}

#[tokio::test]
async fn ledgers_and_transactions_have_the_recorded_shapes_and_match_horizon() {
    let d = devnet(None).await;
    let url = d.urls().stellar_rpc;
    let ledgers = call(
        &url,
        "getLedgers",
        json!({"startLedger": 3, "pagination": {"limit": 4}}),
    )
    .await["result"]
        .clone();
    for name in [
        "stellar-rpc/derived/stellar_stellar-docs_examples_Ledgers.json__GetLedgersResult.getLedgers.result.json",
        "stellar-rpc/derived/stellar_js-stellar-sdk_test_unit_server_soroban_get_ledgers.test.ts__mockLedgerResult.getLedgers.result.json",
    ] {
        same_shape("getLedgers", &fixture_json(name), &ledgers);
    }
    let list = ledgers["ledgers"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(ledgers["cursor"], "6");
    let txs = call(
        &url,
        "getTransactions",
        json!({"startLedger": 3, "pagination": {"limit": 200}}),
    )
    .await["result"]
        .clone();
    same_shape(
        "getTransactions",
        &fixture_json(
            "stellar-rpc/derived/stellar_stellar-docs_examples_Transactions.json__GetTransactionsResult.getTransactions.result.json",
        ),
        &txs,
    );
    let mut trades_seen = 0;
    for (n, l) in list.iter().enumerate() {
        let seq = 3 + n as u64;
        assert_eq!(l["sequence"], seq);
        let h: LedgerHeaderHistoryEntry = xdr(&l["headerXdr"]);
        assert_eq!(u64::from(h.header.ledger_seq), seq);
        assert_eq!(hex(&h.hash.0), l["hash"].as_str().unwrap());
        assert_eq!(
            h.header.scp_value.close_time.0.to_string(),
            l["ledgerCloseTime"].as_str().unwrap()
        );
        let LedgerCloseMeta::V2(meta) = xdr(&l["metadataXdr"]) else {
            panic!("close meta V2 expected");
        };
        assert_eq!(meta.ledger_header, h);
        let GeneralizedTransactionSet::V1(set) = &meta.tx_set;
        let TransactionPhase::V0(comps) = &set.phases[0] else {
            panic!("classic phase");
        };
        let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = &comps[0];
        // The ledger's transactions in getTransactions: same hashes, envelopes, results.
        let of_ledger: Vec<&Value> = txs["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["ledger"] == seq)
            .collect();
        assert_eq!(of_ledger.len(), c.txs.len());
        assert_eq!(meta.tx_processing.len(), c.txs.len());
        for ((t, env), p) in of_ledger
            .iter()
            .zip(c.txs.iter())
            .zip(meta.tx_processing.iter())
        {
            assert_eq!(xdr::<TransactionEnvelope>(&t["envelopeXdr"]), *env);
            let hash = hex(&env.hash(network()).unwrap());
            assert_eq!(t["txHash"], hash.as_str());
            assert_eq!(hex(&p.result.transaction_hash.0), hash);
            assert_eq!(xdr::<TransactionResult>(&t["resultXdr"]), p.result.result);
        }
        // Its DEX trades: manage_sell_offer fills with Horizon's amounts.
        let horizon = reqwest::get(format!(
            "{}/trades?base_asset_type=native&counter_asset_type=credit_alphanum4&counter_asset_code=UBEC&counter_asset_issuer={}&cursor={}&limit=200",
            d.urls().horizon,
            d.control().stellar_issuer(),
            (seq << 32) - 1
        ))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
        let want: Vec<(i64, i64)> = horizon["_embedded"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["id"]
                    .as_str()
                    .unwrap()
                    .split('-')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >> 32
                    == seq
            })
            .map(|r| {
                (
                    stroops(r["base_amount"].as_str().unwrap()),
                    stroops(r["counter_amount"].as_str().unwrap()),
                )
            })
            .collect();
        let mut got = Vec::new();
        for (t, env) in of_ledger.iter().zip(c.txs.iter()) {
            let TransactionEnvelope::Tx(e) = env else {
                panic!("v1 envelopes");
            };
            if !matches!(e.tx.operations[0].body, OperationBody::ManageSellOffer(_)) {
                continue;
            }
            assert!(t["applicationOrder"].as_u64().unwrap() >= 1000);
            let r: TransactionResult = xdr(&t["resultXdr"]);
            let TransactionResultResult::TxSuccess(ops) = r.result else {
                panic!("trade failed");
            };
            let OperationResult::OpInner(OperationResultTr::ManageSellOffer(
                ManageSellOfferResult::Success(s),
            )) = &ops[0]
            else {
                panic!("not a manage_sell_offer result");
            };
            let ClaimAtom::OrderBook(a) = &s.offers_claimed[0] else {
                panic!("order book fill");
            };
            // Base is lumens: whichever side sold them.
            let base_sold = a.asset_sold == stellar_xdr::Asset::Native;
            got.push(if base_sold {
                (a.amount_sold, a.amount_bought)
            } else {
                (a.amount_bought, a.amount_sold)
            });
        }
        trades_seen += got.len();
        assert_eq!(got, want, "ledger {seq} trades");
    }
    assert!(trades_seen > 0, "some trades in ledgers 3..=6");

    // Paging by cursor continues after the last ledger / transaction returned.
    let next = call(
        &url,
        "getLedgers",
        json!({"pagination": {"cursor": "6", "limit": 1}}),
    )
    .await["result"]
        .clone();
    assert_eq!(next["ledgers"][0]["sequence"], 7);
    let first = call(
        &url,
        "getTransactions",
        json!({"startLedger": 3, "pagination": {"limit": 3}}),
    )
    .await["result"]
        .clone();
    let after = call(
        &url,
        "getTransactions",
        json!({"pagination": {"cursor": first["cursor"], "limit": 1}}),
    )
    .await["result"]
        .clone();
    assert_eq!(
        after["transactions"][0]["txHash"],
        txs["transactions"][3]["txHash"]
    );
    d.shutdown().await;
}

#[tokio::test]
async fn ledger_limits_retention_and_internal_errors() {
    let d = devnet(Some(20)).await;
    let url = d.urls().stellar_rpc;
    let code = |v: &Value| v["error"]["code"].as_i64();
    let health = call(&url, "getHealth", Value::Null).await["result"].clone();
    let (oldest, latest) = (
        health["oldestLedger"].as_u64().unwrap(),
        health["latestLedger"].as_u64().unwrap(),
    );
    assert_eq!(latest - oldest + 1, 20);
    let old = call(&url, "getLedgers", json!({"startLedger": 1})).await;
    assert_eq!(code(&old), Some(-32600));
    assert_eq!(
        old["error"]["message"],
        format!("startLedger must be within the ledger range: {oldest} - {latest}")
    );
    let big = call(
        &url,
        "getLedgers",
        json!({"startLedger": oldest, "pagination": {"limit": 201}}),
    )
    .await;
    assert_eq!(code(&big), Some(-32602));
    let both = call(
        &url,
        "getLedgers",
        json!({"startLedger": oldest, "pagination": {"cursor": "5"}}),
    )
    .await;
    assert_eq!(code(&both), Some(-32602));
    let ok = call(
        &url,
        "getLedgers",
        json!({"startLedger": oldest, "pagination": {"limit": 200}}),
    )
    .await;
    assert_eq!(ok["result"]["ledgers"].as_array().unwrap().len(), 20);
    assert_eq!(ok["result"]["cursor"], latest.to_string());

    d.control().set_fault(
        "horizon:/rpc",
        Fault {
            jsonrpc_error: Some(-32603),
            max_triggers: Some(1),
            ..Default::default()
        },
    );
    let failed = call(&url, "getTransactions", json!({"startLedger": oldest})).await;
    assert_eq!(code(&failed), Some(-32603), "{failed}");
    let again = call(&url, "getTransactions", json!({"startLedger": oldest})).await;
    assert!(again["result"]["transactions"].is_array(), "{again}");
    d.shutdown().await;
}
