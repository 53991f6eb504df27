//! Helpers shared by the integration tests.
#![allow(dead_code)]

use orrery_devnet::{BitcoinConfig, Devnet, DevnetConfig, EvmChainConfig, StellarConfig};
use serde_json::Value;

/// Absolute path of a recorded fixture; panics loudly if the fixtures are missing.
pub fn fixture_path(rel: &str) -> String {
    let p = format!("{}/../../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&p).exists(),
        "fixture {p} is missing: the shared fixtures directory is required"
    );
    p
}

/// Reads a fixture as text.
pub fn fixture(rel: &str) -> String {
    std::fs::read_to_string(fixture_path(rel)).unwrap()
}

/// Reads a fixture as JSON.
pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_str(&fixture(rel)).unwrap()
}

/// `>>` request and `<<` response of an execution-apis `.io` fixture.
pub fn rpc_fixture(rel: &str) -> (Value, Value) {
    let text = fixture(rel);
    let mut req = None;
    let mut resp = None;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix(">> ") {
            req = Some(serde_json::from_str(r).unwrap());
        } else if let Some(r) = line.strip_prefix("<< ") {
            resp = Some(serde_json::from_str(r).unwrap());
        }
    }
    (req.unwrap(), resp.unwrap())
}

/// A small devnet configuration for fast tests.
pub fn small_config(seed: u64) -> DevnetConfig {
    let mut evm_a = EvmChainConfig::new("sepolia", 11_155_111);
    evm_a.initial_blocks = 60;
    let mut evm_b = EvmChainConfig::new("base-sepolia", 84_532);
    evm_b.initial_blocks = 40;
    DevnetConfig {
        seed,
        stellar: StellarConfig {
            accounts: 12,
            initial_operations: 600,
            ..StellarConfig::default()
        },
        evm_chains: vec![evm_a, evm_b],
        bitcoin: BitcoinConfig {
            initial_blocks: 20,
            txs_per_block: 60,
            ..BitcoinConfig::default()
        },
        ..DevnetConfig::default()
    }
}

/// Starts a small devnet.
pub async fn start(seed: u64) -> Devnet {
    Devnet::start(small_config(seed)).await.unwrap()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts that `ours` has every field of `real` with the same JSON type,
/// recursively (arrays: each of our elements against the first real element).
/// `null` in the real response matches anything.
pub fn assert_shape(real: &Value, ours: &Value, path: &str) {
    match (real, ours) {
        (Value::Null, _) => {}
        (Value::Object(r), Value::Object(o)) => {
            for (k, rv) in r {
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in devnet response: {ours}"));
                assert_shape(rv, ov, &format!("{path}.{k}"));
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if let Some(first) = r.first() {
                for (i, ov) in o.iter().enumerate() {
                    assert_shape(first, ov, &format!("{path}[{i}]"));
                }
            }
        }
        _ => assert_eq!(
            kind(real),
            kind(ours),
            "{path}: real {real} vs devnet {ours}"
        ),
    }
}

/// GET a URL and parse JSON.
pub async fn get_json(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// POST a JSON-RPC body.
pub async fn rpc(url: &str, body: &Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
