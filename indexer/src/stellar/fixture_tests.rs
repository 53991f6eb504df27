//! Our Horizon parsers accept the real recorded responses in `../shared/fixtures/horizon/`
//! (sources in its SOURCES.txt), read in place, never copied.

use serde_json::Value;

use super::dex::decode_bucket;
use super::horizon::{decode_account, decode_operation, records};
use super::sse::parse_block;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../shared/fixtures/horizon/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("recorded fixture {path} is missing: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).expect("fixture is JSON")
}

#[test]
fn recorded_operations_and_payments_decode() {
    for name in [
        "kommitters_stellar_sdk_fixtures_horizon_operations.json",
        "kommitters_stellar_sdk_fixtures_horizon_payments.json",
    ] {
        let page = json(name);
        let recs = records(&page);
        assert!(!recs.is_empty(), "{name} has records");
        for r in &recs {
            let op = decode_operation(r).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(op.id.to_string(), r["id"].as_str().unwrap());
            assert_eq!(op.paging_token, r["paging_token"].as_str().unwrap());
            assert_eq!(op.op_type, r["type"].as_str().unwrap());
            if op.op_type == "payment" {
                // Exact: the decimal string and the stroops agree to the last digit.
                let amount = r["amount"].as_str().unwrap();
                let (whole, frac) = amount.split_once('.').unwrap();
                let expected = whole.parse::<i64>().unwrap() * 10_000_000
                    + format!("{frac:0<7}").parse::<i64>().unwrap();
                assert_eq!(op.amount, Some(expected), "{amount}");
                assert_eq!(op.from.as_deref(), r["from"].as_str());
                assert_eq!(op.to.as_deref(), r["to"].as_str());
            }
        }
    }
}

#[test]
fn recorded_account_decodes_with_exact_balances() {
    let v = json("kommitters_stellar_sdk_fixtures_horizon_account.json");
    let acc = decode_account(&v).expect("account decodes");
    assert_eq!(acc.id, v["account_id"].as_str().unwrap());
    assert_eq!(acc.balances.len(), v["balances"].as_array().unwrap().len());
    let eurt = acc
        .balances
        .iter()
        .find(|b| b.asset.code == "EURT")
        .expect("EURT line");
    assert_eq!(eurt.balance, 30_000_000, "3.0000000 EURT");
    assert_eq!(
        eurt.limit,
        Some(9_223_372_036_854_775_807),
        "the maximum trustline limit is exact"
    );
    let native = acc
        .balances
        .iter()
        .find(|b| b.asset.asset_type() == "native")
        .expect("XLM line");
    assert_eq!(native.balance, 1_009_998_300, "100.9998300 XLM");
}

#[test]
fn recorded_trade_aggregations_decode() {
    let page = json("kommitters_stellar_sdk_fixtures_horizon_trade_aggregations.json");
    let recs = records(&page);
    assert!(!recs.is_empty());
    for r in &recs {
        let (at, close, price, volume) = decode_bucket(r).expect("bucket decodes");
        assert_eq!(
            at.timestamp_millis().to_string(),
            r["timestamp"].as_str().unwrap()
        );
        assert_eq!(close, r["close"].as_str().unwrap());
        assert!(price > 0.0 && volume > 0.0);
    }
}

#[test]
fn recorded_sse_framing_is_understood() {
    let text = fixture("stellar_go_render_sse_stream_handler_test_hello_byebye.sse");
    let blocks: Vec<&str> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    assert_eq!(blocks.len(), 2, "hello and byebye");
    for b in blocks {
        assert!(parse_block(b).expect("control events parse").is_none());
    }
}
