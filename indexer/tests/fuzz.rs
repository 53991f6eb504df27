//! Property-based fuzzing of every decoder of upstream data, on the stable toolchain
//! (`proptest`): Horizon JSON (operations, accounts, SSE blocks, trade aggregations), EVM
//! JSON-RPC logs and headers and ERC-8004 log decoding with arbitrary topics and data,
//! Esplora blocks and transactions, the exchange price answer, and Stellar RPC (JSON-RPC
//! envelopes, pages, event ids, XDR from arbitrary bytes and from mutated recorded XDR).
//!
//! Property of each target: the decoder returns (a value or its typed error), it never
//! panics, and inputs stay bounded (strategies cap sizes; XDR decoding is bounded by the
//! decoder's own limits, checked with length prefixes that claim gigabytes).
//!
//! Generation is structure-aware where it matters: recorded fixtures from
//! `shared/fixtures/` (read in place) are mutated (fields dropped, values replaced by other
//! types, strings truncated, numbers turned into strings and back, XDR bytes flipped,
//! truncated, inserted, length words inflated) besides plain random input.
//!
//! Each property runs 256 cases by default; `ORRERY_FUZZ_CASES=N` runs N. Seeds that found
//! bugs are kept below as named regression tests.

use std::sync::OnceLock;

use base64::Engine;
use orrery_indexer::bitcoin::esplora::{convert_tx, BlockHeader, EsploraTx};
use orrery_indexer::bitcoin::exchange::usd_price;
use orrery_indexer::evm::decode::{decode_log, Erc8004Event, Registry};
use orrery_indexer::evm::rpc::{decode_logs, quantity, Header};
use orrery_indexer::stellar::dex::decode_bucket;
use orrery_indexer::stellar::horizon::{decode_account, decode_operation, records};
use orrery_indexer::stellar::rpc::client::decode_answer;
use orrery_indexer::stellar::rpc::decode::{decode_ledger, decode_tx, entry_balance};
use orrery_indexer::stellar::rpc::events::{decode_event, parse_event_id};
use orrery_indexer::stellar::rpc::types::{
    EntryInfo, EventsPage, LedgerInfo, LedgersPage, TransactionsPage, TxInfo,
};
use orrery_indexer::stellar::rpc::xdr::{decode, XdrError};
use orrery_indexer::stellar::sse::parse_block;
use proptest::prelude::*;
use serde_json::Value;

const TESTNET: &str = "Test SDF Network ; September 2015";

/// Cases per property: `ORRERY_FUZZ_CASES`, default 256.
fn cases() -> u32 {
    std::env::var("ORRERY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Failures are kept as named tests below, not as files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures and structure-aware JSON mutation.

fn fixture_text(rel: &str) -> String {
    let path = format!("{}/../../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("recorded fixture {path} is missing: {e}"))
}

fn fixture(rel: &str) -> Value {
    serde_json::from_str(&fixture_text(rel)).expect("fixture is JSON")
}

/// Horizon operation and payment records (`_embedded.records` of the recorded pages).
fn horizon_ops() -> &'static [Value] {
    static OPS: OnceLock<Vec<Value>> = OnceLock::new();
    OPS.get_or_init(|| {
        let mut v = records(&fixture(
            "horizon/kommitters_stellar_sdk_fixtures_horizon_operations.json",
        ));
        v.extend(records(&fixture(
            "horizon/kommitters_stellar_sdk_fixtures_horizon_payments.json",
        )));
        assert!(v.len() >= 2, "recorded operations");
        v
    })
}

/// One JSON mutation, applied at the node picked by a selector.
#[derive(Debug, Clone)]
enum Mutation {
    /// Drop the field or element.
    Remove,
    /// Put another value (of any type) there.
    Replace(Value),
    /// Cut a string (or an array) to this length.
    Truncate(usize),
    /// Number -> its decimal string, string of digits -> number, bool -> string.
    Retype,
}

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "-?[0-9]{0,22}(\\.[0-9]{0,9})?",
        "0x[0-9a-fA-F+é-]{0,70}",
        "[0-9a-f+-]{62,66}",
        Just(String::new()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("922337203685.4775807".to_string()),
        Just("-922337203685.4775808".to_string()),
        Just("2019-10-31T99:99:99Z".to_string()),
        Just("native".to_string()),
        Just("credit_alphanum4".to_string()),
        Just("payment".to_string()),
        Just("path_payment_strict_send".to_string()),
        Just("create_account".to_string()),
        Just("change_trust".to_string()),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys the decoders read, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "id",
            "type",
            "created_at",
            "source_account",
            "transaction_successful",
            "transaction_hash",
            "from",
            "to",
            "amount",
            "asset_type",
            "asset_code",
            "asset_issuer",
            "source_amount",
            "source_asset_type",
            "balances",
            "balance",
            "limit",
            "account_id",
            "txid",
            "vin",
            "vout",
            "value",
            "witness",
            "is_coinbase",
            "topics",
            "data",
            "result",
            "error",
            "code",
            "USD",
            "timestamp",
            "close",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Remove),
        3 => arb_json().prop_map(Mutation::Replace),
        2 => (0usize..80).prop_map(Mutation::Truncate),
        2 => Just(Mutation::Retype),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<(usize, Mutation)>> {
    prop::collection::vec((any::<usize>(), mutation()), 1..6)
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every node below the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", escape(k));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

fn mutate(mut v: Value, muts: &[(usize, Mutation)]) -> Value {
    for (sel, m) in muts {
        let mut ps = Vec::new();
        pointers(&v, String::new(), &mut ps);
        if ps.is_empty() {
            if let Mutation::Replace(r) = m {
                v = r.clone();
            }
            continue;
        }
        let p = &ps[sel % ps.len()];
        match m {
            Mutation::Remove => {
                let (parent, last) = p.rsplit_once('/').expect("pointer has a slash");
                let last = last.replace("~1", "/").replace("~0", "~");
                match v.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>() {
                            if i < a.len() {
                                a.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Mutation::Replace(r) => {
                if let Some(n) = v.pointer_mut(p) {
                    *n = r.clone();
                }
            }
            Mutation::Truncate(len) => match v.pointer_mut(p) {
                Some(Value::String(s)) => {
                    let cut = s
                        .char_indices()
                        .nth(*len)
                        .map_or(s.len(), |(i, _)| i)
                        .min(s.len());
                    s.truncate(cut);
                }
                Some(Value::Array(a)) => a.truncate(*len % 4),
                _ => {}
            },
            Mutation::Retype => {
                if let Some(n) = v.pointer_mut(p) {
                    *n = match n.take() {
                        Value::Number(x) => Value::String(x.to_string()),
                        Value::String(s) => match s.parse::<i64>() {
                            Ok(i) => Value::from(i),
                            Err(_) => Value::Array(vec![Value::String(s)]),
                        },
                        Value::Bool(b) => Value::String(b.to_string()),
                        Value::Null => Value::Bool(false),
                        other => Value::String(other.to_string()),
                    };
                }
            }
        }
    }
    v
}

/// A prefix of `text` (at a character boundary).
fn prefix(text: &str, cut: usize) -> &str {
    let mut i = cut % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    &text[..i]
}

// ---------------------------------------------------------------------------------------
// Horizon.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn horizon_operations_mutated_decode_or_error(
        pick in any::<usize>(),
        muts in mutations(),
    ) {
        let ops = horizon_ops();
        let v = mutate(ops[pick % ops.len()].clone(), &muts);
        if let Ok(op) = decode_operation(&v) {
            // A decoded operation is self-consistent.
            prop_assert!(op.participants.contains(&op.source_account));
            prop_assert_eq!(op.raw, v);
        }
    }

    #[test]
    fn horizon_arbitrary_json_decodes_or_errors(v in arb_json()) {
        let _ = decode_operation(&v);
        let _ = decode_account(&v);
        let _ = records(&v);
        let _ = decode_bucket(&v);
        let _ = usd_price(&v);
    }

    #[test]
    fn horizon_account_mutated_decodes_or_errors(muts in mutations()) {
        static ACCOUNT: OnceLock<Value> = OnceLock::new();
        let account = ACCOUNT
            .get_or_init(|| fixture("horizon/kommitters_stellar_sdk_fixtures_horizon_account.json"));
        let v = mutate(account.clone(), &muts);
        if let Ok(a) = decode_account(&v) {
            prop_assert!(!a.id.is_empty() || v.get("account_id").is_some() || v.get("id").is_some());
        }
    }

    #[test]
    fn horizon_trade_aggregations_mutated_decode_or_none(pick in any::<usize>(), muts in mutations()) {
        static BUCKETS: OnceLock<Vec<Value>> = OnceLock::new();
        let buckets = BUCKETS.get_or_init(|| {
            records(&fixture("horizon/kommitters_stellar_sdk_fixtures_horizon_trade_aggregations.json"))
        });
        prop_assume!(!buckets.is_empty());
        let v = mutate(buckets[pick % buckets.len()].clone(), &muts);
        let _ = decode_bucket(&v);
    }

    #[test]
    fn horizon_sse_blocks_decode_or_error(
        pick in any::<usize>(),
        muts in mutations(),
        cut in any::<usize>(),
        junk in "\\PC{0,40}",
    ) {
        let ops = horizon_ops();
        let text = mutate(ops[pick % ops.len()].clone(), &muts).to_string();
        // Whole, truncated (a dropped connection mid-event), and after junk lines.
        let _ = parse_block(&format!("id: 1\ndata: {text}\n\n"));
        let _ = parse_block(&format!("data: {}\n", prefix(&text, cut)));
        let _ = parse_block(&format!("{junk}\ndata:{junk}\n"));
    }
}

// ---------------------------------------------------------------------------------------
// EVM.

/// topic0 of every event the registries emit (current and legacy ABIs).
fn known_topic0() -> Vec<[u8; 32]> {
    fixture_text("erc8004/topic0_computed_from_abis.txt")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|h| hex::decode(h.trim_start_matches("0x")).ok())
        .filter_map(|b| <[u8; 32]>::try_from(b).ok())
        .collect()
}

fn topic() -> impl Strategy<Value = [u8; 32]> {
    prop_oneof![
        any::<[u8; 32]>(),
        // Small integers and addresses, as indexed parameters are.
        any::<u64>().prop_map(|n| {
            let mut t = [0u8; 32];
            t[24..].copy_from_slice(&n.to_be_bytes());
            t
        }),
        any::<[u8; 20]>().prop_map(|a| {
            let mut t = [0u8; 32];
            t[12..].copy_from_slice(&a);
            t
        }),
    ]
}

/// ABI-shaped data: 32-byte words, some of them offsets or lengths (small, huge, or just
/// past the end), with a ragged tail.
fn abi_data() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        any::<[u8; 32]>(),
        (0u64..512).prop_map(|n| {
            let mut w = [0u8; 32];
            w[24..].copy_from_slice(&n.to_be_bytes());
            w
        }),
        Just([0xff; 32]),
        Just({
            let mut w = [0u8; 32];
            w[28..].copy_from_slice(&u32::MAX.to_be_bytes());
            w
        }),
    ];
    (
        prop::collection::vec(word, 0..14),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(words, tail)| {
            let mut d: Vec<u8> = words.concat();
            d.extend(tail);
            d
        })
}

fn registry() -> impl Strategy<Value = Registry> {
    prop::sample::select(vec![
        Registry::Identity,
        Registry::Reputation,
        Registry::Validation,
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn evm_logs_with_arbitrary_topics_and_data_decode_or_error(
        reg in registry(),
        t0 in any::<prop::sample::Index>(),
        random_t0 in any::<bool>(),
        rest in prop::collection::vec(topic(), 0..4),
        data in prop_oneof![abi_data(), prop::collection::vec(any::<u8>(), 0..600)],
    ) {
        let known = known_topic0();
        let mut topics: Vec<alloy_primitives::B256> = Vec::new();
        if !random_t0 {
            topics.push(alloy_primitives::B256::from(*t0.get(&known)));
        }
        topics.extend(rest.into_iter().map(alloy_primitives::B256::from));
        if let Ok(ev) = decode_log(reg, &topics, &data) {
            // What is stored as name + args reads back as the same event.
            let (name, args) = ev.to_name_args();
            prop_assert_eq!(Erc8004Event::from_name_args(&name, &args), Some(ev));
        }
    }

    #[test]
    fn evm_json_rpc_logs_and_headers_decode_or_error(v in arb_json(), s in interesting_string()) {
        let _ = decode_logs(v.clone());
        let _ = decode_logs(Value::Array(vec![v.clone()]));
        let _ = Header::from_value(v);
        if quantity(&s).is_ok() {
            // Accepted only when it is `0x` and hex digits.
            prop_assert!(s.len() > 2 && s[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{}", s);
        }
    }

    #[test]
    fn evm_recorded_logs_mutated_decode_or_error(pick in any::<usize>(), muts in mutations()) {
        let logs = recorded_evm_logs();
        prop_assume!(!logs.is_empty());
        let v = mutate(logs[pick % logs.len()].clone(), &muts);
        if let Ok(decoded) = decode_logs(Value::Array(vec![v])) {
            for l in decoded {
                for reg in [Registry::Identity, Registry::Reputation, Registry::Validation] {
                    let _ = decode_log(reg, &l.topics, &l.data);
                }
            }
        }
    }
}

/// Log objects of the recorded `eth_getLogs` answers (`<<` lines of the `.io` files).
fn recorded_evm_logs() -> &'static [Value] {
    static LOGS: OnceLock<Vec<Value>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let dir = format!("{}/../../shared/fixtures/evm", env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).expect("evm fixtures") {
            let path = e.expect("dir entry").path();
            if !path.to_string_lossy().contains("getLogs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("fixture");
            for line in text.lines().filter_map(|l| l.strip_prefix("<< ")) {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    if let Some(a) = v.get("result").and_then(Value::as_array) {
                        out.extend(a.iter().cloned());
                    }
                }
            }
        }
        assert!(!out.is_empty(), "recorded logs in {dir}");
        out
    })
}

// ---------------------------------------------------------------------------------------
// Esplora and exchange prices.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn esplora_tx_mutated_converts_or_errors(muts in mutations()) {
        static TX: OnceLock<Value> = OnceLock::new();
        let tx = TX.get_or_init(|| fixture("esplora/mempool_cypress_fixtures_details_rbf_tx02_api_tx.json"));
        let v = mutate(tx.clone(), &muts);
        if let Ok(t) = serde_json::from_value::<EsploraTx>(v.clone()) {
            if let Ok(conv) = convert_tx(&t) {
                // A converted txid is exactly the hex the record gave.
                let given = v["txid"].as_str().unwrap_or_default().to_ascii_lowercase();
                prop_assert_eq!(hex::encode(conv.txid), given);
                prop_assert_eq!(conv.outputs.len(), v["vout"].as_array().map_or(0, Vec::len));
            }
        }
    }

    #[test]
    fn esplora_arbitrary_json_decodes_or_errors(v in arb_json(), txid in "[0-9a-fA-F+-]{64}") {
        let _ = serde_json::from_value::<BlockHeader>(v.clone());
        let _ = serde_json::from_value::<Vec<BlockHeader>>(v.clone());
        if let Ok(t) = serde_json::from_value::<EsploraTx>(v) {
            let _ = convert_tx(&t);
        }
        let t: EsploraTx = serde_json::from_value(serde_json::json!({
            "txid": txid, "vin": [{"txid": txid, "witness": ["00"]}], "vout": [{"value": 1}]
        })).expect("shape");
        if let Ok(c) = convert_tx(&t) {
            prop_assert_eq!(hex::encode(c.txid), txid.to_ascii_lowercase());
        }
    }

    #[test]
    fn esplora_block_header_mutated_decodes_or_errors(muts in mutations()) {
        let header = serde_json::json!({
            "id": "000000000000000000023d2d03fe9ab1f2ff7e2b0d0fa1d17b0b6b1ab4a3f7d0",
            "height": 820000, "version": 536870912, "timestamp": 1702000000,
            "tx_count": 3000, "size": 1500000, "weight": 3990000,
            "merkle_root": "aa", "previousblockhash": "00", "mediantime": 1701990000,
            "nonce": 1, "bits": 386089497, "difficulty": 6.7e13
        });
        let v = mutate(header, &muts);
        let _ = serde_json::from_value::<BlockHeader>(v);
    }
}

// ---------------------------------------------------------------------------------------
// Stellar RPC: JSON and XDR.

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Every recorded `getEvents` event, `getTransactions` record and `getLedgers` ledger.
struct RpcCorpus {
    events: Vec<Value>,
    txs: Vec<(Value, &'static str)>,
    ledgers: Vec<Value>,
    /// Every base64 XDR string of the records, with the type it holds.
    xdr: Vec<(&'static str, String)>,
}

fn rpc_corpus() -> &'static RpcCorpus {
    static CORPUS: OnceLock<RpcCorpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut c = RpcCorpus {
            events: Vec::new(),
            txs: Vec::new(),
            ledgers: Vec::new(),
            xdr: Vec::new(),
        };
        let result = |name: &str| fixture(&format!("stellar-rpc/{name}"))["result"].clone();
        let derived = |name: &str| fixture(&format!("stellar-rpc/derived/{name}"));
        for page in [
            result("stellar_rs-stellar-rpc-client_src_fixtures_events_response_p22.json"),
            result("stellar_rs-stellar-rpc-client_src_fixtures_events_response_p23.json"),
            derived("stellar_stellar-docs_examples_Events.json__TwoNativeTransferEvents.getEvents.result.json"),
            derived("stellar_stellar-docs_examples_Events.json__AnyTwoEvents.getEvents.result.json"),
        ] {
            c.events.extend(page["events"].as_array().cloned().unwrap_or_default());
        }
        for page in [
            result("stellar_rs-stellar-rpc-client_src_fixtures_transactions_response.json"),
            derived("stellar_stellar-docs_examples_Transactions.json__GetTransactionsResult.getTransactions.result.json"),
        ] {
            for t in page["transactions"].as_array().cloned().unwrap_or_default() {
                c.txs.push((t, TESTNET));
            }
        }
        let page = derived(
            "stellar_stellar-docs_examples_Ledgers.json__GetLedgersResult.getLedgers.result.json",
        );
        c.ledgers.extend(page["ledgers"].as_array().cloned().unwrap_or_default());
        for e in &c.events {
            for t in e["topic"].as_array().into_iter().flatten() {
                if let Some(s) = t.as_str() {
                    c.xdr.push(("ScVal", s.to_string()));
                }
            }
            if let Some(s) = e["value"].as_str() {
                c.xdr.push(("ScVal", s.to_string()));
            }
        }
        for (t, _) in &c.txs {
            for (k, ty) in [
                ("envelopeXdr", "TransactionEnvelope"),
                ("resultXdr", "TransactionResult"),
                ("resultMetaXdr", "TransactionMeta"),
            ] {
                if let Some(s) = t[k].as_str() {
                    c.xdr.push((ty, s.to_string()));
                }
            }
        }
        for l in &c.ledgers {
            for (k, ty) in [
                ("headerXdr", "LedgerHeaderHistoryEntry"),
                ("metadataXdr", "LedgerCloseMeta"),
            ] {
                if let Some(s) = l[k].as_str() {
                    c.xdr.push((ty, s.to_string()));
                }
            }
        }
        assert!(!c.events.is_empty() && !c.txs.is_empty() && !c.ledgers.is_empty());
        c
    })
}

/// Decodes `b64` as the XDR type named `ty`; every outcome is a value or a typed error.
fn decode_as(ty: &str, b64: &str) -> Result<(), XdrError> {
    use stellar_xdr as x;
    match ty {
        "ScVal" => decode::<x::ScVal>("ScVal", b64).map(drop),
        "TransactionEnvelope" => decode::<x::TransactionEnvelope>("env", b64).map(drop),
        "TransactionResult" => decode::<x::TransactionResult>("result", b64).map(drop),
        "TransactionMeta" => decode::<x::TransactionMeta>("meta", b64).map(drop),
        "LedgerHeaderHistoryEntry" => {
            decode::<x::LedgerHeaderHistoryEntry>("header", b64).map(drop)
        }
        "LedgerCloseMeta" => decode::<x::LedgerCloseMeta>("close meta", b64).map(drop),
        "LedgerEntryData" => decode::<x::LedgerEntryData>("entry", b64).map(drop),
        "TransactionEvent" => decode::<x::TransactionEvent>("tx event", b64).map(drop),
        "ContractEvent" => decode::<x::ContractEvent>("contract event", b64).map(drop),
        other => panic!("no decoder for {other}"),
    }
}

const XDR_TYPES: [&str; 9] = [
    "ScVal",
    "TransactionEnvelope",
    "TransactionResult",
    "TransactionMeta",
    "LedgerHeaderHistoryEntry",
    "LedgerCloseMeta",
    "LedgerEntryData",
    "TransactionEvent",
    "ContractEvent",
];

/// One byte-level mutation of XDR.
#[derive(Debug, Clone)]
enum ByteMut {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Overwrite an aligned 4-byte word (XDR lengths, discriminants) with this value.
    Word(usize, u32),
}

fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| ByteMut::Flip(i, b)),
        any::<usize>().prop_map(ByteMut::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, b)| ByteMut::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| ByteMut::Delete(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                Just(u32::MAX),
                Just(0x7fff_ffff),
                Just(0x0100_0000),
                0u32..64
            ]
        )
            .prop_map(|(i, w)| ByteMut::Word(i, w)),
    ]
}

fn mutate_bytes(mut b: Vec<u8>, muts: &[ByteMut]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match m {
            ByteMut::Flip(i, x) if n > 0 => b[i % n] ^= x | 1,
            ByteMut::Truncate(i) => b.truncate(i % (n + 1)),
            ByteMut::Insert(i, x) => {
                let at = i % (n + 1);
                b.splice(at..at, x.iter().copied());
            }
            ByteMut::Delete(i, k) if n > 0 => {
                let at = i % n;
                b.drain(at..(at + k).min(n));
            }
            ByteMut::Word(i, w) if n >= 4 => {
                let at = (i % (n / 4)) * 4;
                b[at..at + 4].copy_from_slice(&w.to_be_bytes());
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn xdr_from_arbitrary_bytes_decodes_or_errors(
        ty in prop::sample::select(XDR_TYPES.to_vec()),
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        text in "\\PC{0,64}",
    ) {
        let _ = decode_as(ty, &b64().encode(&bytes));
        // Not base64 at all, or base64 with junk.
        let not_base64 = format!("{text}!");
        prop_assert!(decode_as(ty, &not_base64).is_err());
        let _ = decode_as(ty, &text);
    }

    #[test]
    fn xdr_recorded_and_mutated_decodes_or_errors(
        pick in any::<usize>(),
        as_other in prop::option::of(prop::sample::select(XDR_TYPES.to_vec())),
        muts in prop::collection::vec(byte_mut(), 1..6),
    ) {
        let corpus = rpc_corpus();
        let (ty, s) = &corpus.xdr[pick % corpus.xdr.len()];
        let bytes = b64().decode(s).expect("recorded XDR is base64");
        let mutated = b64().encode(mutate_bytes(bytes, &muts));
        let _ = decode_as(as_other.unwrap_or(*ty), &mutated);
    }

    #[test]
    fn rpc_events_mutated_decode_or_error(
        pick in any::<usize>(),
        muts in mutations(),
        xdr_muts in prop::collection::vec(byte_mut(), 0..4),
        slot in any::<usize>(),
    ) {
        let corpus = rpc_corpus();
        let mut v = corpus.events[pick % corpus.events.len()].clone();
        // Mutate one XDR field at byte level, then the JSON around it.
        let fields: Vec<String> = {
            let mut f = vec!["/value".to_string()];
            let n = v["topic"].as_array().map_or(0, Vec::len);
            f.extend((0..n).map(|i| format!("/topic/{i}")));
            f
        };
        let field = &fields[slot % fields.len()];
        if let Some(Value::String(s)) = v.pointer_mut(field) {
            if let Ok(b) = b64().decode(s.as_str()) {
                *s = b64().encode(mutate_bytes(b, &xdr_muts));
            }
        }
        let v = mutate(v, &muts);
        let page = serde_json::json!({"events": [v], "latestLedger": 1, "cursor": "1-1"});
        if let Ok(p) = serde_json::from_value::<EventsPage>(page) {
            for e in &p.events {
                if let Ok(ev) = decode_event(e) {
                    prop_assert_eq!(ev.tx_hash.as_str(), e.tx_hash.as_str());
                }
            }
        }
    }

    #[test]
    fn rpc_transactions_mutated_decode_or_error(
        pick in any::<usize>(),
        muts in mutations(),
        xdr_muts in prop::collection::vec(byte_mut(), 0..4),
        field in prop::sample::select(vec!["envelopeXdr", "resultXdr", "resultMetaXdr"]),
    ) {
        let corpus = rpc_corpus();
        let (t, passphrase) = &corpus.txs[pick % corpus.txs.len()];
        let mut v = t.clone();
        if let Some(Value::String(s)) = v.get_mut(field) {
            if let Ok(b) = b64().decode(s.as_str()) {
                *s = b64().encode(mutate_bytes(b, &xdr_muts));
            }
        }
        let v = mutate(v, &muts);
        if let Ok(t) = serde_json::from_value::<TxInfo>(v.clone()) {
            let _ = decode_tx(&t, passphrase);
        }
        let page = serde_json::json!({"transactions": [v], "latestLedger": 1,
            "latestLedgerCloseTimestamp": 1, "oldestLedger": 1,
            "oldestLedgerCloseTimestamp": 1, "cursor": "1"});
        let _ = serde_json::from_value::<TransactionsPage>(page);
    }

    #[test]
    fn rpc_ledgers_mutated_decode_or_error(
        pick in any::<usize>(),
        muts in mutations(),
        xdr_muts in prop::collection::vec(byte_mut(), 0..4),
        field in prop::sample::select(vec!["headerXdr", "metadataXdr"]),
    ) {
        let corpus = rpc_corpus();
        let mut v = corpus.ledgers[pick % corpus.ledgers.len()].clone();
        if let Some(Value::String(s)) = v.get_mut(field) {
            if let Ok(b) = b64().decode(s.as_str()) {
                *s = b64().encode(mutate_bytes(b, &xdr_muts));
            }
        }
        let v = mutate(v, &muts);
        if let Ok(l) = serde_json::from_value::<LedgerInfo>(v.clone()) {
            if let Ok(d) = decode_ledger(&l) {
                prop_assert_eq!(d.header.header.ledger_seq, l.sequence);
            }
        }
        let page = serde_json::json!({"ledgers": [v], "latestLedger": 1, "oldestLedger": 1, "cursor": "1"});
        let _ = serde_json::from_value::<LedgersPage>(page);
    }

    #[test]
    fn rpc_envelopes_ids_and_entries_decode_or_error(
        v in arb_json(),
        id in prop_oneof!["-?[0-9]{0,22}-[0-9-]{0,12}", "\\PC{0,30}"],
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        last in any::<u32>(),
    ) {
        let _ = decode_answer::<EventsPage>("getEvents", v.clone());
        let _ = decode_answer::<TransactionsPage>("getTransactions", v.clone());
        let _ = decode_answer::<LedgersPage>("getLedgers", v.clone());
        let _ = decode_answer::<Value>("x", serde_json::json!({"jsonrpc": "2.0", "id": 1, "error": v}));
        if let Ok((toid, _)) = parse_event_id(&id) {
            prop_assert!(toid >= 0);
        }
        let e = EntryInfo {
            key: String::new(),
            xdr: b64().encode(&bytes),
            last_modified_ledger_seq: last,
            live_until_ledger_seq: None,
        };
        let _ = entry_balance(&e);
    }
}

// ---------------------------------------------------------------------------------------
// Bounded allocation and regression seeds.

/// An XDR length prefix claiming 4 GiB (or 2 GiB) must fail at once: the decoder's byte
/// budget is the input's own size, so nothing is allocated for the claim.
#[test]
fn xdr_length_prefixes_claiming_gigabytes_are_refused() {
    // ScVal::Bytes (discriminant 13) and ScVal::Vec (16, Some) with huge lengths.
    for claim in [u32::MAX, 0x7fff_ffff, 0x1000_0000] {
        let mut bytes = 13u32.to_be_bytes().to_vec();
        bytes.extend(claim.to_be_bytes());
        bytes.extend([0u8; 8]);
        let started = std::time::Instant::now();
        assert!(decode_as("ScVal", &b64().encode(&bytes)).is_err());
        let mut vec = 16u32.to_be_bytes().to_vec();
        vec.extend(1u32.to_be_bytes());
        vec.extend(claim.to_be_bytes());
        assert!(decode_as("ScVal", &b64().encode(&vec)).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
    // Deep nesting past the depth limit is refused, not a stack overflow.
    let mut deep = Vec::new();
    for _ in 0..5_000 {
        deep.extend(16u32.to_be_bytes());
        deep.extend(1u32.to_be_bytes());
        deep.extend(1u32.to_be_bytes());
    }
    deep.extend(0u32.to_be_bytes()); // ScVal::Bool
    deep.extend(0u32.to_be_bytes());
    assert!(decode_as("ScVal", &b64().encode(&deep)).is_err());
}

/// Regression: `eth_getLogs` data with a multi-byte character at an odd byte position
/// panicked (the decoder sliced the string two bytes at a time).
#[test]
fn evm_log_data_with_a_multibyte_character() {
    let log = |data: &str| {
        serde_json::json!([{
            "address": "0x0000000000000000000000000000000000000001",
            "topics": [],
            "data": data,
            "blockNumber": "0x1",
            "blockHash": format!("0x{}", "00".repeat(32)),
            "transactionHash": format!("0x{}", "00".repeat(32)),
            "logIndex": "0x0"
        }])
    };
    assert!(decode_logs(log("0xaé0")).is_err());
    assert!(decode_logs(log("0xé0")).is_err());
    assert_eq!(decode_logs(log("0x00ff")).unwrap()[0].data, vec![0, 0xff]);
}

/// Regression: a sign was taken for a hex digit (`0x+1` was the quantity 1, and an Esplora
/// txid with `+` pairs decoded to other bytes than it names).
#[test]
fn signs_are_not_hex_digits() {
    assert!(quantity("0x+1").is_err());
    assert!(quantity("0x-1").is_err());
    assert_eq!(quantity("0x1f").unwrap(), 31);
    let txid = format!("+f{}", "0".repeat(62));
    let t: EsploraTx = serde_json::from_value(serde_json::json!({
        "txid": txid, "vin": [], "vout": []
    }))
    .unwrap();
    assert!(convert_tx(&t).is_err());
}
