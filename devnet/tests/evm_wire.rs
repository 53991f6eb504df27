//! EVM JSON-RPC wire format against execution-apis fixtures, ERC-8004 topics,
//! limits, batches and reorgs.

mod common;

use alloy_sol_types::SolEvent;
use common::*;
use orrery_devnet::evm::abi::{self, EventKind};
use serde_json::{json, Value};

#[tokio::test]
async fn block_and_logs_match_recorded_shapes() {
    let devnet = start(11).await;
    let ep = &devnet.urls().evm[0];
    let (_, real_block) = rpc_fixture("evm/execution-apis_eth_getBlockByNumber__get-latest.io");
    let ours = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["latest",true]}),
    )
    .await;
    assert_eq!(ours["jsonrpc"], "2.0");
    assert_eq!(ours["id"], 1);
    // Find a block with transactions so the tx object shape is checked too.
    let mut checked_tx = false;
    for n in (1..=devnet.control().evm_head("sepolia").unwrap()).rev() {
        let b = rpc(&ep.url, &json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":[format!("0x{n:x}"),true]})).await;
        assert_shape(&real_block, &b, "block");
        if !b["result"]["transactions"].as_array().unwrap().is_empty() {
            checked_tx = true;
            // Block by hash returns the same block.
            let by_hash = rpc(&ep.url, &json!({"jsonrpc":"2.0","id":2,"method":"eth_getBlockByHash","params":[b["result"]["hash"],true]})).await;
            assert_eq!(by_hash["result"], b["result"]);
            break;
        }
    }
    assert!(checked_tx);
    let (_, nf) = rpc_fixture("evm/execution-apis_eth_getBlockByNumber__get-block-notfound.io");
    let ours = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["0xffffff",true]}),
    )
    .await;
    assert_eq!(ours, nf);
    let (_, bn) = rpc_fixture("evm/execution-apis_eth_blockNumber__simple-test.io");
    let ours = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}),
    )
    .await;
    assert_shape(&bn, &ours, "blockNumber");
    assert_eq!(
        ours["result"],
        format!("0x{:x}", devnet.control().evm_head("sepolia").unwrap())
    );

    let (_, real_logs) = rpc_fixture("evm/execution-apis_eth_getLogs__contract-addr.io");
    let ours = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{
        "address": [ep.contracts.identity, ep.contracts.reputation, ep.contracts.validation],
        "fromBlock": "0x0", "toBlock": "latest"}]}),
    )
    .await;
    let logs = ours["result"].as_array().unwrap();
    assert_eq!(
        logs.len(),
        devnet.control().evm_logs("sepolia").unwrap().len()
    );
    assert!(!logs.is_empty());
    assert_shape(&real_logs, &ours, "getLogs");
    // Keys exactly as geth sends them.
    let real_keys: std::collections::BTreeSet<_> = real_logs["result"][0]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let our_keys: std::collections::BTreeSet<_> =
        logs[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(real_keys, our_keys);
    devnet.shutdown().await;
}

#[test]
fn topic0_hashes_match_recorded_abis() {
    let text = fixture("erc8004/topic0_computed_from_abis.txt");
    let mut expected = std::collections::HashMap::new();
    for line in text.lines().skip(1) {
        let (hash, rest) = line.split_once(' ').unwrap();
        let sig = rest.split(' ').next().unwrap();
        let legacy = rest.contains("pre-2026");
        expected.insert((sig.to_string(), legacy), hash.to_string());
    }
    for kind in EventKind::ALL {
        let legacy = matches!(
            kind,
            EventKind::LegacyNewFeedback | EventKind::LegacyUriUpdated
        );
        let want = expected
            .get(&(kind.signature().to_string(), legacy))
            .unwrap_or_else(|| panic!("{} not in fixture", kind.signature()));
        assert_eq!(
            &format!("{:#x}", kind.topic0()),
            want,
            "{}",
            kind.signature()
        );
    }
    // And the signatures agree with the recorded ABI JSON (names and input types).
    for (file, events) in [
        (
            "IdentityRegistry",
            vec![
                EventKind::Registered,
                EventKind::UriUpdated,
                EventKind::MetadataSet,
                EventKind::Transfer,
            ],
        ),
        (
            "ReputationRegistry",
            vec![
                EventKind::NewFeedback,
                EventKind::FeedbackRevoked,
                EventKind::ResponseAppended,
            ],
        ),
        (
            "ValidationRegistry",
            vec![EventKind::ValidationRequest, EventKind::ValidationResponse],
        ),
    ] {
        let abi = fixture_json(&format!("erc8004/erc-8004-contracts_abis_{file}.json"));
        for kind in events {
            let found = abi.as_array().unwrap().iter().any(|e| {
                e["type"] == "event" && {
                    let types: Vec<&str> = e["inputs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i["type"].as_str().unwrap())
                        .collect();
                    format!("{}({})", e["name"].as_str().unwrap(), types.join(","))
                        == kind.signature()
                }
            });
            assert!(found, "{} not in {file} ABI", kind.signature());
        }
    }
}

#[tokio::test]
async fn logs_decode_with_the_real_abi_and_filters_work() {
    let devnet = start(12).await;
    let ep = &devnet.urls().evm[1];
    let topic = format!("{:#x}", abi::NewFeedback::SIGNATURE_HASH);
    let ours = rpc(&ep.url, &json!({"jsonrpc":"2.0","id":7,"method":"eth_getLogs","params":[{
        "address": ep.contracts.reputation, "fromBlock": "0x0", "toBlock": "latest", "topics": [[topic]]}]})).await;
    let logs = ours["result"].as_array().unwrap();
    assert!(!logs.is_empty());
    for l in logs {
        assert_eq!(l["address"], ep.contracts.reputation);
        let topics: Vec<alloy_primitives::B256> = l["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().parse().unwrap())
            .collect();
        let data = alloy_primitives::hex::decode(l["data"].as_str().unwrap()).unwrap();
        let ev = abi::NewFeedback::decode_raw_log(topics.iter().copied(), &data).unwrap();
        assert!(ev.feedbackIndex >= 1);
        assert_eq!(
            ev.indexedTag1,
            alloy_primitives::keccak256(ev.tag1.as_bytes())
        );
    }
    // Topic position 1 filter (agent id) with a null wildcard at position 0.
    let agent = logs[0]["topics"][1].clone();
    let filtered = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":8,"method":"eth_getLogs","params":[{
        "fromBlock": "0x0", "toBlock": "latest", "topics": [null, [agent]]}]}),
    )
    .await;
    let f = filtered["result"].as_array().unwrap();
    assert!(!f.is_empty());
    assert!(f.iter().all(|l| l["topics"][1] == agent));
    devnet.shutdown().await;
}

#[tokio::test]
async fn errors_match_recorded_error_objects() {
    let devnet = start(13).await;
    let ep = &devnet.urls().evm[0];
    let head = devnet.control().evm_head("sepolia").unwrap();
    // Same requests as the fixtures, shifted to this chain's head where needed.
    let (req, want) =
        rpc_fixture("evm/execution-apis_eth_getLogs__filter-error-reversed-block-range.io");
    assert_eq!(rpc(&ep.url, &req).await, want);
    let (mut req, want) =
        rpc_fixture("evm/execution-apis_eth_getLogs__filter-error-future-block-range.io");
    req["params"][0]["fromBlock"] = json!(format!("0x{:x}", head - 2));
    req["params"][0]["toBlock"] = json!(format!("0x{:x}", head + 4));
    assert_eq!(rpc(&ep.url, &req).await, want);
    let (mut req, want) =
        rpc_fixture("evm/execution-apis_eth_getLogs__filter-error-invalid-blockHash-and-range.io");
    let h0 = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["0x3",false]}),
    )
    .await;
    req["params"][0]["blockHash"] = h0["result"]["hash"].clone();
    assert_eq!(rpc(&ep.url, &req).await, want);

    // Block-hash query (as in filter-with-blockHash) returns only that block's logs.
    let (mut req, _) = rpc_fixture("evm/execution-apis_eth_getLogs__filter-with-blockHash.io");
    req["params"][0]["blockHash"] = h0["result"]["hash"].clone();
    let r = rpc(&ep.url, &req).await;
    assert!(r["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["blockNumber"] == "0x3"));

    // Unknown method.
    let r = rpc(
        &ep.url,
        &json!({"jsonrpc":"2.0","id":1,"method":"eth_nope"}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32601);
    // Parse error.
    let r: Value = reqwest::Client::new()
        .post(&ep.url)
        .body("{not json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["error"]["code"], -32700);
    devnet.shutdown().await;
}

#[tokio::test]
async fn range_and_result_limits() {
    let mut cfg = small_config(14);
    cfg.evm_chains[0].max_block_range = 10;
    cfg.evm_chains[0].max_logs_per_query = 5;
    let devnet = orrery_devnet::Devnet::start(cfg).await.unwrap();
    let ep = &devnet.urls().evm[0];
    let r = rpc(&ep.url, &json!({"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"0x1","toBlock":"0x20"}]})).await;
    assert_eq!(r["error"]["code"], -32005);
    assert_eq!(r["error"]["message"], "exceed maximum block range: 10");
    let r = rpc(&ep.url, &json!({"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock":"0x1","toBlock":"0xa"}]})).await;
    assert_eq!(r["error"]["code"], -32005);
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("query returned more than 5 results"));
    devnet.shutdown().await;
}

#[tokio::test]
async fn batch_requests_answer_in_order() {
    let devnet = start(15).await;
    let ep = &devnet.urls().evm[1];
    let r = rpc(&ep.url, &json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":"two","method":"eth_blockNumber"},
        {"jsonrpc":"2.0","id":3,"method":"eth_getLogs","params":[{"fromBlock":"0x2","toBlock":"0x1"}]},
    ])).await;
    let arr = r.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["result"], "0x14a34"); // 84532
    assert_eq!(arr[1]["id"], "two");
    assert_eq!(arr[2]["error"]["code"], -32602);
    let r = rpc(&ep.url, &json!([])).await;
    assert_eq!(r["error"]["code"], -32600);
    devnet.shutdown().await;
}

#[tokio::test]
async fn reorg_replaces_recent_blocks_consistently() {
    let devnet = start(16).await;
    let ep = devnet.urls().evm[0].clone();
    let control = devnet.control();
    let head = control.evm_head("sepolia").unwrap();
    let block = |n: u64| {
        let url = ep.url.clone();
        async move {
            rpc(&url, &json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":[format!("0x{n:x}"),false]})).await["result"].clone()
        }
    };
    let before: Vec<Value> = futures::future::join_all((head - 5..=head).map(block)).await;
    let logs_before = control.evm_logs("sepolia").unwrap();
    // Over HTTP, as a separate test process would.
    let r = reqwest::Client::new()
        .post(format!("{}/_devnet/reorg_evm", devnet.urls().horizon))
        .json(&json!({"chain": "sepolia", "depth": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(control.evm_head("sepolia").unwrap(), head);
    let after: Vec<Value> = futures::future::join_all((head - 5..=head).map(block)).await;
    for i in 0..3 {
        assert_eq!(before[i]["hash"], after[i]["hash"], "kept block {i}");
    }
    for i in 3..6 {
        assert_ne!(before[i]["hash"], after[i]["hash"], "replaced block {i}");
    }
    for i in 1..6 {
        assert_eq!(after[i]["parentHash"], after[i - 1]["hash"]);
    }
    let logs_after = control.evm_logs("sepolia").unwrap();
    let kept = |l: &&orrery_devnet::evm::model::RenderedLog| l.block_number <= head - 3;
    assert_eq!(
        logs_before.iter().filter(kept).collect::<Vec<_>>(),
        logs_after.iter().filter(kept).collect::<Vec<_>>()
    );
    // The other chain is untouched.
    assert_eq!(control.evm_head("base-sepolia").unwrap(), 39);
    devnet.shutdown().await;
}
