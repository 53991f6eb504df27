//! Esplora wire format against recorded responses, paging, reorgs, the price
//! signal and the mempool-style prices endpoint.

mod common;

use common::*;
use serde_json::Value;

async fn text(url: &str) -> String {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn blocks_and_transactions_match_recorded_shapes() {
    let devnet = start(21).await;
    let e = devnet.urls().esplora;
    let real_height = fixture("esplora/mempool_api_docs_blocks_tip_height_mainnet.txt");
    let height = text(&format!("{e}/blocks/tip/height")).await;
    // Same format as the recorded body: a bare decimal integer.
    assert!(real_height.trim().parse::<u64>().is_ok());
    let tip: u64 = height.parse().unwrap();
    assert_eq!(tip, devnet.control().bitcoin_tip());
    let tip_hash = text(&format!("{e}/blocks/tip/hash")).await;
    assert_eq!(text(&format!("{e}/block-height/{tip}")).await, tip_hash);
    assert_eq!(text(&format!("{e}/api/block-height/{tip}")).await, tip_hash);

    let block = get_json(&format!("{e}/block/{tip_hash}")).await;
    for (k, kind) in [
        ("id", "s"),
        ("height", "n"),
        ("version", "n"),
        ("timestamp", "n"),
        ("tx_count", "n"),
        ("size", "n"),
        ("weight", "n"),
        ("merkle_root", "s"),
        ("previousblockhash", "s"),
        ("mediantime", "n"),
        ("nonce", "n"),
        ("bits", "n"),
        ("difficulty", "n"),
    ] {
        let v = &block[k];
        assert!(
            if kind == "s" {
                v.is_string()
            } else {
                v.is_number()
            },
            "{k}: {v}"
        );
    }
    assert_eq!(block["id"], tip_hash.as_str());
    assert_eq!(
        text(&format!("{e}/block-height/{}", tip - 1)).await,
        block["previousblockhash"].as_str().unwrap()
    );

    let real_tx = fixture_json("esplora/mempool_cypress_fixtures_details_rbf_tx02_api_tx.json");
    let n = block["tx_count"].as_u64().unwrap();
    let mut all = Vec::new();
    let mut start = 0;
    while start < n {
        let page = get_json(&format!("{e}/block/{tip_hash}/txs/{start}")).await;
        let page = page.as_array().unwrap().clone();
        assert_eq!(page.len() as u64, (n - start).min(25));
        all.extend(page);
        start += 25;
    }
    assert_eq!(all.len() as u64, n);
    assert_eq!(all[0]["vin"][0]["is_coinbase"], true);
    assert!(all[0]["vin"][0]["prevout"].is_null());
    // electrs omits scriptpubkey_address for outputs without an address (OP_RETURN).
    let mut real_no_addr = real_tx.clone();
    real_no_addr["vout"][0]
        .as_object_mut()
        .unwrap()
        .remove("scriptpubkey_address");
    let mut op_returns = 0;
    for tx in &all[1..] {
        let has_op_return = tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["scriptpubkey_type"] == "op_return");
        if has_op_return {
            op_returns += 1;
            assert_shape(&real_no_addr, tx, "tx");
            for o in tx["vout"].as_array().unwrap() {
                if o["scriptpubkey_type"] != "op_return" {
                    assert_shape(&real_tx["vout"][0], o, "vout");
                }
            }
        } else {
            assert_shape(&real_tx, tx, "tx");
        }
        assert_eq!(tx["status"]["confirmed"], true);
        assert_eq!(tx["status"]["block_hash"], tip_hash.as_str());
        assert!(tx["vin"][0]["witness"].is_array());
        let ins: u64 = tx["vin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["prevout"]["value"].as_u64().unwrap())
            .sum();
        let outs: u64 = tx["vout"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["value"].as_u64().unwrap())
            .sum();
        assert_eq!(ins - outs, tx["fee"].as_u64().unwrap());
    }
    assert!(op_returns > 0, "some noise transactions carry OP_RETURN");
    // Every transaction resolves by txid, coinbase included.
    for tx in [&all[0], &all[1], &all[n as usize - 1]] {
        let by_id = get_json(&format!("{e}/tx/{}", tx["txid"].as_str().unwrap())).await;
        assert_eq!(&by_id, tx);
        let status = get_json(&format!("{e}/tx/{}/status", tx["txid"].as_str().unwrap())).await;
        assert_eq!(status, tx["status"]);
    }
    let r = reqwest::get(format!("{e}/tx/{}", "cd".repeat(32)))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let txids: Value = get_json(&format!("{e}/block/{tip_hash}/txids")).await;
    assert_eq!(txids.as_array().unwrap().len() as u64, n);
    assert_eq!(txids[30], all[30]["txid"]);

    let r = reqwest::get(format!("{e}/block/{tip_hash}/txs/7"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::get(format!("{e}/block/{}", "00".repeat(32)))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{e}/block-height/{}", tip + 1))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    devnet.shutdown().await;
}

/// Output amounts (BTC) of the transactions the UTXOracle filter keeps
/// (shared/design/utxoracle.md section 2).
fn qualifying_outputs(txs: &[Value]) -> Vec<f64> {
    let mut out = Vec::new();
    for tx in txs {
        let vin = tx["vin"].as_array().unwrap();
        let vout = tx["vout"].as_array().unwrap();
        if vin.len() > 5 || vout.len() != 2 || vin[0]["is_coinbase"] == true {
            continue;
        }
        if vout
            .iter()
            .any(|o| o["scriptpubkey"].as_str().unwrap().starts_with("6a"))
        {
            continue;
        }
        if vin.iter().any(|i| {
            i["witness"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().len() / 2 > 500)
        }) {
            continue;
        }
        for o in vout {
            let btc = o["value"].as_u64().unwrap() as f64 / 1e8;
            if 1e-5 < btc && btc < 1e5 {
                out.push(btc);
            }
        }
    }
    out
}

/// Fraction of outputs within +-0.5% of a round USD amount at `price`.
fn round_usd_share(outputs: &[f64], price: f64) -> f64 {
    let hits = outputs
        .iter()
        .filter(|btc| {
            [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
                .iter()
                .any(|usd| (*btc * price / usd - 1.0).abs() <= 0.0051)
        })
        .count();
    hits as f64 / outputs.len() as f64
}

#[tokio::test]
async fn outputs_carry_the_price_signal_and_prices_endpoint_agrees() {
    let devnet = start(22).await;
    let control = devnet.control();
    control.set_price_path(vec![71_234.0]).unwrap();
    let e = devnet.urls().esplora;
    let tip = control.bitcoin_tip();
    let mut txs = Vec::new();
    for h in tip - 4..=tip {
        let hash = text(&format!("{e}/block-height/{h}")).await;
        for start in [0, 25, 50] {
            txs.extend(
                get_json(&format!("{e}/block/{hash}/txs/{start}"))
                    .await
                    .as_array()
                    .unwrap()
                    .clone(),
            );
        }
    }
    let outputs = qualifying_outputs(&txs);
    assert!(outputs.len() > 200, "{} qualifying outputs", outputs.len());
    let at_price = round_usd_share(&outputs, 71_234.0);
    // Signal outputs are one of two outputs of ~65% of transactions.
    assert!(at_price > 0.3, "share at the day's price {at_price}");
    for wrong in [60_000.0, 66_000.0, 77_000.0, 85_000.0] {
        let share = round_usd_share(&outputs, wrong);
        assert!(
            share < at_price / 4.0,
            "share at {wrong}: {share} vs {at_price}"
        );
    }

    let prices = get_json(&format!("{}/api/v1/prices", devnet.urls().exchange_prices)).await;
    assert_eq!(prices["USD"], 71_234);
    assert!(prices["time"].is_i64() && prices["EUR"].is_i64());
    let daily = control.daily_prices();
    assert_eq!(daily.last().unwrap().1, 71_234.0);
    devnet.shutdown().await;
}

#[tokio::test]
async fn bitcoin_reorg_changes_tip_and_keeps_parents_linked() {
    let devnet = start(23).await;
    let e = devnet.urls().esplora;
    let control = devnet.control();
    let tip = control.bitcoin_tip();
    let old: Vec<String> = futures::future::join_all((tip - 3..=tip).map(|h| {
        let e = e.clone();
        async move { text(&format!("{e}/block-height/{h}")).await }
    }))
    .await;
    control.reorg_bitcoin(2).unwrap();
    control.advance_bitcoin_blocks(1).unwrap();
    let new: Vec<String> = futures::future::join_all((tip - 3..=tip + 1).map(|h| {
        let e = e.clone();
        async move { text(&format!("{e}/block-height/{h}")).await }
    }))
    .await;
    assert_eq!(old[..2], new[..2]);
    assert_ne!(old[2], new[2]);
    assert_ne!(old[3], new[3]);
    for i in 1..new.len() {
        let b = get_json(&format!("{e}/block/{}", new[i])).await;
        assert_eq!(b["previousblockhash"].as_str().unwrap(), new[i - 1]);
    }
    // The replaced block is still served, marked as not in the best chain.
    let status = get_json(&format!("{e}/block/{}/status", old[3])).await;
    assert_eq!(status["in_best_chain"], false);
    devnet.shutdown().await;
}
