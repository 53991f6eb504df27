//! Fault injection over HTTP: statuses, latency, truncation, invalid JSON,
//! dropped connections, hangs, scoping, and the HTTP control API.

mod common;

use std::time::{Duration, Instant};

use common::*;
use orrery_devnet::Fault;
use serde_json::{json, Value};

#[tokio::test]
async fn status_faults_use_service_error_shapes() {
    let devnet = start(31).await;
    let urls = devnet.urls();
    let control = devnet.control();
    control.set_fault(
        "horizon:/ledgers",
        Fault {
            status: Some(503),
            retry_after: Some(7),
            ..Fault::default()
        },
    );
    let r = reqwest::get(format!("{}/ledgers", urls.horizon))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 503);
    // Other paths and services are unaffected.
    assert_eq!(
        reqwest::get(format!("{}/", urls.horizon))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/blocks/tip/height", urls.esplora))
            .await
            .unwrap()
            .status(),
        200
    );

    control.set_fault(
        "evm:sepolia:/eth_getLogs",
        Fault {
            status: Some(429),
            ..Fault::default()
        },
    );
    let req = json!({"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{}]});
    let r = reqwest::Client::new()
        .post(&urls.evm[0].url)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = reqwest::Client::new()
        .post(&urls.evm[1].url)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "other chain unaffected");
    let r = rpc(
        &urls.evm[0].url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId"}),
    )
    .await;
    assert_eq!(r["result"], "0xaa36a7", "other methods unaffected");

    control.clear_faults();
    assert_eq!(
        reqwest::get(format!("{}/ledgers", urls.horizon))
            .await
            .unwrap()
            .status(),
        200
    );
    devnet.shutdown().await;
}

#[tokio::test]
async fn every_nth_and_max_triggers() {
    let devnet = start(32).await;
    let e = devnet.urls().esplora;
    devnet.control().set_fault(
        "esplora",
        Fault {
            status: Some(500),
            every_nth: Some(3),
            max_triggers: Some(2),
            ..Fault::default()
        },
    );
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(
            reqwest::get(format!("{e}/blocks/tip/height"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500, 200, 200, 200]);
    devnet.shutdown().await;
}

#[tokio::test]
async fn latency_truncation_invalid_json() {
    let devnet = start(33).await;
    let h = devnet.urls().horizon;
    let control = devnet.control();
    control.set_fault(
        "horizon:/ledgers",
        Fault {
            latency: Some(Duration::from_millis(300)),
            ..Fault::default()
        },
    );
    let t = Instant::now();
    let r = reqwest::get(format!("{h}/ledgers")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    control.clear_faults();

    control.set_fault(
        "horizon:/operations",
        Fault {
            truncate_body: true,
            ..Fault::default()
        },
    );
    let body = reqwest::get(format!("{h}/operations"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.is_empty());
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "truncated body must not parse"
    );
    control.clear_faults();

    control.set_fault(
        "exchange",
        Fault {
            invalid_json: true,
            ..Fault::default()
        },
    );
    let r = reqwest::get(format!("{}/api/v1/prices", devnet.urls().exchange_prices))
        .await
        .unwrap();
    assert!(r.json::<Value>().await.is_err());
    devnet.shutdown().await;
}

#[tokio::test]
async fn dropped_connections_and_hangs() {
    let devnet = start(34).await;
    let urls = devnet.urls();
    let control = devnet.control();
    control.set_fault(
        "esplora:/blocks",
        Fault {
            drop_connection: true,
            ..Fault::default()
        },
    );
    let r = reqwest::get(format!("{}/blocks/tip/height", urls.esplora)).await;
    assert!(r.is_err(), "connection should be dropped: {r:?}");
    // The server keeps serving other requests.
    assert_eq!(
        reqwest::get(format!("{}/block-height/880000", urls.esplora))
            .await
            .unwrap()
            .status(),
        200
    );

    control.set_fault(
        "horizon",
        Fault {
            timeout: Some(Duration::from_secs(60)),
            ..Fault::default()
        },
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = client.get(format!("{}/ledgers", urls.horizon)).send().await;
    assert!(r.unwrap_err().is_timeout());
    // Shutdown does not wait for the hung request.
    let t = Instant::now();
    devnet.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn http_control_api_drives_the_devnet() {
    let devnet = start(35).await;
    let h = devnet.urls().horizon;
    let c = reqwest::Client::new();
    let post = |path: &str, body: Value| c.post(format!("{h}/_devnet/{path}")).json(&body).send();
    let before = devnet.control().latest_ledger();
    let r: Value = post("advance_ledgers", json!({"n": 2}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["latest_ledger"], before + 2);
    let r: Value = post("advance_blocks", json!({"chain": "base-sepolia", "n": 5}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["head"], 44);
    let r: Value = post("advance_bitcoin_blocks", json!({"n": 1}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["tip"], devnet.control().bitcoin_tip());
    let accounts = devnet.control().stellar_accounts();
    let r = post("submit_payment", json!({"from": accounts[2], "to": accounts[3], "asset": "native", "amount": "1.5", "memo": "dist:7"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        "submit_payment",
        json!({"from": accounts[2], "to": "GNOPE", "asset": "native", "amount": "1"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(
        "fault",
        json!({"target": "esplora", "fault": {"status": 502}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        reqwest::get(format!("{}/blocks/tip/hash", devnet.urls().esplora))
            .await
            .unwrap()
            .status(),
        502
    );
    post("clear_faults", json!({})).await.unwrap();
    assert_eq!(
        reqwest::get(format!("{}/blocks/tip/hash", devnet.urls().esplora))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post("price_path", json!({"prices": [50000.0, 60000.0]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: Value = c
        .get(format!("{h}/_devnet/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["evm_heads"]["base-sepolia"], 44);
    devnet.shutdown().await;
}
