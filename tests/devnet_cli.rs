//! `orrery devnet` and `orrery serve --devnet`: the simulated chains as an operator starts them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{base_env, command, Server, TestDb};
use serde_json::Value;

#[tokio::test]
async fn orrery_devnet_prints_urls_that_answer_like_the_real_services() {
    let mut child = command(&[("ORRERY_LOG".into(), "warn".into())])
        .args(["devnet", "--manual", "--seed", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn orrery devnet");
    let stdout = child.stdout.take().unwrap();
    // Killed even when an assertion below fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut urls = std::collections::HashMap::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["evm", name, url, ..] => {
                    urls.insert(format!("evm:{name}"), url.to_string());
                }
                [name, url, ..] => {
                    urls.insert(name.to_string(), url.to_string());
                }
                _ => {}
            }
            if line.starts_with("control API") {
                let _ = tx.send(urls.clone());
                return;
            }
        }
    });
    let urls = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("devnet printed its URLs");
    let horizon = &urls["horizon"];
    let root: Value = reqwest::get(horizon.as_str())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        root["history_latest_ledger"].as_u64().unwrap() > 0,
        "{root}"
    );
    let tip = reqwest::get(format!("{}/blocks/tip/height", urls["esplora"]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(tip.trim().parse::<u64>().is_ok(), "{tip}");
    let chain_id: Value = reqwest::Client::new()
        .post(urls["evm:sepolia"].as_str())
        .json(
            &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(chain_id["result"].as_str().unwrap().starts_with("0x"));
}

#[tokio::test]
async fn serve_with_devnet_starts_the_simulated_chains_in_process() {
    let db = TestDb::new().await;
    let server = Server::start_with_args(&base_env(&db), &["serve", "--devnet"]);
    let (status, _) = server.get("/ready").await;
    assert_eq!(status, 200);
    assert!(
        server.logs().contains("devnet started"),
        "{}",
        server.logs()
    );
}
