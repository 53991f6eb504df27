//! The Rust control handle: generation, accessors, auto-advance, stable ports,
//! SSE from a cursor, and shutdown with open streams.

mod common;

use std::time::Duration;

use common::*;
use orrery_devnet::{Devnet, PortConfig};
use serde_json::Value;

#[tokio::test]
async fn generate_operations_and_logs() {
    let devnet = start(41).await;
    let c = devnet.control();
    let before = c.operation_count();
    c.generate_operations(1_000).unwrap();
    assert!(c.operation_count() >= before + 1_000);
    let all = c.operations(None).unwrap();
    assert_eq!(all.len(), c.operation_count());
    assert!(all.iter().any(|o| o.kind == "change_trust"));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let logs_before = c.evm_logs("sepolia").unwrap().len();
    let head = c.generate_evm_logs("sepolia", 100).unwrap();
    assert!(c.evm_logs("sepolia").unwrap().len() >= logs_before + 100);
    assert_eq!(c.evm_head("sepolia").unwrap(), head);
    assert!(c.advance_blocks("nope", 1).is_err());
    // Account operations over HTTP match the accessor.
    let acc = c.stellar_accounts()[3].clone();
    let mut ids = Vec::new();
    let mut url = format!(
        "{}/accounts/{acc}/operations?limit=200",
        devnet.urls().horizon
    );
    loop {
        let page = get_json(&url).await;
        let recs = page["_embedded"]["records"].as_array().unwrap().clone();
        if recs.is_empty() {
            break;
        }
        ids.extend(
            recs.iter()
                .map(|r| r["id"].as_str().unwrap().parse::<i64>().unwrap()),
        );
        url = page["_links"]["next"]["href"].as_str().unwrap().to_string();
    }
    let expected: Vec<i64> = c
        .operations(Some(&acc))
        .unwrap()
        .iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, expected);
    devnet.shutdown().await;
}

#[tokio::test]
async fn auto_advance_and_stable_ports() {
    let mut cfg = small_config(42);
    cfg.ledger_interval = Some(Duration::from_millis(50));
    cfg.evm_chains[0].block_interval = Some(Duration::from_millis(50));
    // Find a free base port range.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = probe.local_addr().unwrap().port();
    drop(probe);
    cfg.ports = PortConfig::from_base(base, 2);
    let devnet = match Devnet::start(cfg).await {
        Ok(d) => d,
        // Another process may have taken a port in the range meanwhile.
        Err(orrery_devnet::DevnetError::Bind { .. }) => return,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(devnet.urls().horizon, format!("http://127.0.0.1:{base}"));
    assert_eq!(
        devnet.urls().evm[1].url,
        format!("http://127.0.0.1:{}", base + 11)
    );
    let c = devnet.control();
    let (l0, b0) = (c.latest_ledger(), c.evm_head("sepolia").unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(c.latest_ledger() > l0);
    assert!(c.evm_head("sepolia").unwrap() > b0);
    assert_eq!(
        c.evm_head("base-sepolia").unwrap(),
        39,
        "no interval configured"
    );
    devnet.shutdown().await;
}

#[tokio::test]
async fn sse_from_a_cursor_replays_then_shutdown_ends_stream() {
    let devnet = start(43).await;
    let h = devnet.urls().horizon;
    let c = devnet.control();
    let ops = c.operations(None).unwrap();
    let cursor = ops[ops.len() - 5].id;
    let mut resp = reqwest::Client::new()
        .get(format!("{h}/operations?cursor={cursor}"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| e.starts_with("id: "))
        .collect();
    assert_eq!(events.len(), 4);
    for (e, op) in events.iter().zip(&ops[ops.len() - 4..]) {
        assert!(e.starts_with(&format!("id: {}\ndata: ", op.id)));
        let data: Value = serde_json::from_str(e.split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["id"], op.id.to_string());
    }
    let t = std::time::Instant::now();
    devnet.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "open SSE stream must not block shutdown"
    );
    // The stream ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(end.is_ok());
}
