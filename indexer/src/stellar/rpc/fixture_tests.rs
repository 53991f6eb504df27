//! Our RPC decoders read every recorded response in `../shared/fixtures/stellar-rpc/`
//! (sources in its SOURCES.txt), in place, never copied; each decoded event, transaction
//! and ledger is checked against what the fixture states.

use serde_json::Value;
use stellar_xdr::{LedgerHeader, LedgerHeaderHistoryEntry, ScVal, TransactionMeta};

use super::client::decode_answer;
use super::decode::{decode_ledger, decode_tx};
use super::events::{decode_event, Movement};
use super::sac::{SacAsset, MAINNET_PASSPHRASE, TESTNET_PASSPHRASE};
use super::types::{EventsPage, Health, LedgersPage, RpcEvent, TransactionsPage, TxInfo};
use super::xdr::decode;

/// The local network's passphrase (the rs-stellar-rpc-client fixtures were recorded on one).
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

/// The `result` of a full JSON-RPC envelope, through our envelope decoder.
fn result<T: serde::de::DeserializeOwned>(name: &str) -> T {
    decode_answer("fixture", json(name)).expect("decodes")
}

fn derived<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(json(&format!("derived/{name}"))).expect("decodes")
}

fn all_scvals_decode(e: &RpcEvent) {
    for t in &e.topic {
        decode::<ScVal>("topic", t).unwrap_or_else(|err| panic!("{}: {err}", e.id));
    }
    decode::<ScVal>("value", &e.value).unwrap_or_else(|err| panic!("{}: {err}", e.id));
}

#[test]
fn docs_native_transfers_decode_field_by_field() {
    let page: EventsPage = derived(
        "stellar_stellar-docs_examples_Events.json__TwoNativeTransferEvents.getEvents.result.json",
    );
    assert_eq!(page.latest_ledger, 3_730_843);
    assert_eq!(page.cursor, "0016010972359577600-0000000008");
    let xlm = SacAsset::parse("XLM", TESTNET_PASSPHRASE).unwrap();
    let ev: Vec<_> = page
        .events
        .iter()
        .map(|e| decode_event(e).unwrap())
        .collect();
    let tx = "a5c9247b77eb04c0d857934a2e988c408167976c8acbdf3d8acf64c44deb3beb";
    for e in &ev {
        assert_eq!((e.ledger, e.tx_hash.as_str()), (3_727_845, tx));
        assert_eq!(e.contract_id, xlm.contract_id);
        assert_eq!(e.asset.as_deref(), Some("native"));
        assert_eq!(e.toid >> 32, 3_727_845, "the TOID names the ledger");
    }
    assert_eq!(ev[0].id, "0016010972359577600-0000000001");
    assert_eq!((ev[0].toid, ev[0].index), (16_010_972_359_577_600, 1));
    assert_eq!(
        ev[0].movement,
        Movement::Transfer {
            from: "GCHHLGOJVLRAPYBB6TR4NS4VRF5VW5RKZXQCVQUGMLGLXPTKJFCINQVE".into(),
            to: "CCXP6YNFJZIDQD6N37DPCEKXJGLL56ZSAT5D5RPZG4NONL7IRAGWKFD2".into(),
            amount: 3_000_000_000,
            to_muxed_id: None,
        }
    );
    assert_eq!(
        ev[1].movement,
        Movement::Transfer {
            from: "CBXVVJ5BOTUVRPXUY54LXFILWC4ZTJWRP2GIVHBMOEAOPHSLGHBG3NNP".into(),
            to: "CAL6PHDJ7VULBPGSBSDGG34P4HG7R2QYJ2J6JVY3BH5CFFCUXGIC4P43".into(),
            amount: 42_558_863,
            to_muxed_id: None,
        }
    );
    assert_eq!(ev[0].closed_at, page.events[0].ledger_closed_at);
}

#[test]
fn docs_fee_events_decode() {
    let page: EventsPage =
        derived("stellar_stellar-docs_examples_Events.json__AnyTwoEvents.getEvents.result.json");
    let ev: Vec<_> = page
        .events
        .iter()
        .map(|e| decode_event(e).unwrap())
        .collect();
    assert_eq!(
        ev[0].movement,
        Movement::Fee {
            from: "GAB62KEKMKHDOMF3256P4CS7FCWRDUPT7M2CLD4JGKFWCA2H3DW3NRRB".into(),
            amount: 100
        }
    );
    assert_eq!(
        ev[0].tx_hash,
        "dd2f693c5d874ed09f2de0a4edbc453a0a74fe3e44a40e8a4017bd47a1708ffd"
    );
    assert_eq!(
        ev[1].movement,
        Movement::Fee {
            from: "GAPPLCK4IUR2GQN7IVXAVXA5VAE3I7BYO3TS4UFSPQ66EKAJ4MUPNEDY".into(),
            amount: 300
        }
    );
    assert_eq!((ev[1].ledger, ev[1].asset.as_deref()), (3_729_796, None));
    assert_eq!(ev[1].movement.deltas()[0].1, -300, "a fee is debited");
}

#[test]
fn p23_fee_and_refund_and_non_token_events() {
    let page: EventsPage =
        result("stellar_rs-stellar-rpc-client_src_fixtures_events_response_p23.json");
    assert_eq!(page.cursor, "0000008985071583231-4294967295");
    assert_eq!((page.latest_ledger, page.oldest_ledger), (2091, Some(7)));
    let local_xlm = SacAsset::parse("XLM", LOCAL_PASSPHRASE).unwrap();
    let from = "GDXYWO42FT7S3BHGK4TU74HB3MXUI2AIQ54653XAXF24REI3TVOK6A2H";
    let mut fees = Vec::new();
    let mut unknown = 0;
    for e in &page.events {
        all_scvals_decode(e);
        assert_eq!(
            e.tx_hash,
            "e42da3c70c90cc319e2cfaa2f69a7bd04aefcc4159b12caa0df216fbb3ab43b4"
        );
        assert_eq!(e.ledger, 2081);
        match decode_event(e) {
            Ok(t) => {
                assert_eq!(
                    t.contract_id, local_xlm.contract_id,
                    "fees come from the XLM SAC"
                );
                fees.push(t.movement);
            }
            Err(err) => {
                assert!(err.is_unknown_topic(), "{err}");
                unknown += 1;
            }
        }
    }
    assert_eq!(unknown, 2, "the COUNTER contract's events are skipped");
    assert_eq!(
        fees,
        [
            Movement::Fee {
                from: from.into(),
                amount: 526_778
            },
            Movement::Fee {
                from: from.into(),
                amount: -104_929
            },
        ],
        "the charge, then the refund as a negative fee"
    );
}

#[test]
fn p22_events_with_diagnostics_decode() {
    let page: EventsPage =
        result("stellar_rs-stellar-rpc-client_src_fixtures_events_response_p22.json");
    assert_eq!(page.events.len(), 16);
    assert_eq!(page.latest_ledger, 562);
    for e in &page.events {
        all_scvals_decode(e);
        assert_eq!(e.ledger, 356);
        assert!(e.tx_hash.starts_with("9a51a5d8"));
        // None of them is a token event: each is a counted skip, never a panic.
        let err = decode_event(e).unwrap_err();
        assert!(err.is_unknown_topic(), "{err}");
    }
}

fn check_txs(txs: &[TxInfo], passphrase: &str) -> usize {
    let mut v4 = 0;
    for t in txs {
        let d = decode_tx(t, passphrase).unwrap_or_else(|e| panic!("{:?}: {e}", t.tx_hash));
        if let Some(h) = &t.tx_hash {
            assert_eq!(&d.hash, h);
        }
        if matches!(d.meta, TransactionMeta::V4(_)) {
            v4 += 1;
        }
        assert!(matches!(
            d.meta,
            TransactionMeta::V3(_) | TransactionMeta::V4(_)
        ));
        for ev in t.events.iter().flat_map(|e| &e.transaction_events_xdr) {
            decode::<stellar_xdr::TransactionEvent>("TransactionEvent", ev).unwrap();
        }
        for ev in t
            .events
            .iter()
            .flat_map(|e| &e.contract_events_xdr)
            .flatten()
        {
            decode::<stellar_xdr::ContractEvent>("ContractEvent", ev).unwrap();
        }
    }
    v4
}

#[test]
fn get_transactions_pages_decode_and_hash() {
    let page: TransactionsPage = derived(
        "stellar_stellar-docs_examples_Transactions.json__GetTransactionsResult.getTransactions.result.json",
    );
    assert!(!page.transactions.is_empty());
    assert!(
        check_txs(&page.transactions, TESTNET_PASSPHRASE) > 0,
        "meta V4"
    );
    assert!(page
        .transactions
        .iter()
        .all(|t| t.ledger == 337_272 || t.ledger > 0));
    let cursor: TransactionsPage = derived(
        "stellar_stellar-docs_examples_Transactions.json__GetTransactionsResultUsingCursor.getTransactions.result.json",
    );
    check_txs(&cursor.transactions, TESTNET_PASSPHRASE);

    let rs: TransactionsPage =
        result("stellar_rs-stellar-rpc-client_src_fixtures_transactions_response.json");
    assert_eq!(rs.transactions.len(), 5);
    assert_eq!(rs.latest_ledger, 556_962);
    assert!(rs.transactions.iter().any(|t| t.fee_bump));
    // These records predate `txHash`: the hash is computed from the envelope.
    check_txs(&rs.transactions, TESTNET_PASSPHRASE);
}

#[test]
fn get_transaction_records_decode_v3_and_v4() {
    for (name, passphrase, v4) in [
        (
            "stellar_rs-stellar-rpc-client_src_fixtures_transaction_response_p22.json",
            LOCAL_PASSPHRASE,
            0,
        ),
        (
            "stellar_rs-stellar-rpc-client_src_fixtures_transaction_response_p23.json",
            LOCAL_PASSPHRASE,
            1,
        ),
    ] {
        let t: TxInfo = result(name);
        assert_eq!(
            check_txs(std::slice::from_ref(&t), passphrase),
            v4,
            "{name}"
        );
    }
    for name in [
        "stellar_stellar-docs_examples_Transactions.json__SuccessTransactionResult.getTransaction.result.json",
        "stellar_stellar-docs_examples_Transactions.json__FailedTransactionResult.getTransaction.result.json",
    ] {
        let t: TxInfo = derived(name);
        assert_eq!(check_txs(std::slice::from_ref(&t), TESTNET_PASSPHRASE), 1);
    }
}

#[test]
fn mainnet_corpus_transactions_decode() {
    let corpus = json("stellar_js-stellar-sdk_test_fixtures_rpc-corpus_transactions.json");
    let recs = corpus["records"].as_array().unwrap();
    assert!(recs.len() > 10);
    for r in recs {
        let t = TxInfo {
            status: "SUCCESS".into(),
            tx_hash: Some(r["txHash"].as_str().unwrap().into()),
            application_order: 1,
            fee_bump: false,
            envelope_xdr: r["envelopeXdr"].as_str().unwrap().into(),
            result_xdr: r["resultXdr"].as_str().unwrap().into(),
            result_meta_xdr: r["resultMetaXdr"].as_str().unwrap().into(),
            ledger: 1,
            created_at: 0,
            events: None,
        };
        check_txs(&[t], MAINNET_PASSPHRASE);
    }
}

#[test]
fn ledgers_decode_with_sequence_and_hash_checked() {
    for name in [
        "stellar_stellar-docs_examples_Ledgers.json__GetLedgersResult.getLedgers.result.json",
        "stellar_js-stellar-sdk_test_unit_server_soroban_get_ledgers.test.ts__mockLedgerResult.getLedgers.result.json",
    ] {
        let page: LedgersPage = derived(name);
        assert!(!page.ledgers.is_empty());
        for l in &page.ledgers {
            decode_ledger(l).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let corpus = json("stellar_js-stellar-sdk_test_fixtures_rpc-corpus_ledgers.json");
    for r in corpus["records"].as_array().unwrap() {
        let h: LedgerHeaderHistoryEntry =
            decode("header", r["headerXdr"].as_str().unwrap()).unwrap();
        assert_eq!(
            i64::from(h.header.ledger_seq),
            r["sequence"].as_i64().unwrap()
        );
    }
}

#[test]
fn health_and_latest_ledger_decode() {
    let h: Health =
        derived("stellar_stellar-docs_methods_getHealth.json__example.getHealth.result.json");
    assert_eq!(h.ledger_retention_window, 120_960);
    assert_eq!(h.status, "healthy");
    let doc = json("stellar_stellar-docs_openrpc_src_stellar-rpc_methods_getLatestLedger.json");
    let v = &doc["examples"][0]["result"]["value"];
    let latest: super::types::LatestLedger = serde_json::from_value(v.clone()).unwrap();
    assert_eq!((latest.sequence, latest.protocol_version), (3_730_795, 27));
    let header: LedgerHeader = decode("LedgerHeader", v["headerXdr"].as_str().unwrap())
        .or_else(|_| {
            decode::<LedgerHeaderHistoryEntry>("header", v["headerXdr"].as_str().unwrap())
                .map(|h| h.header)
        })
        .unwrap();
    assert_eq!(header.ledger_seq, 3_730_795);
    // The docs truncated this metadataXdr on purpose: a clear error, not a panic.
    let meta = decode::<stellar_xdr::LedgerCloseMeta>("meta", v["metadataXdr"].as_str().unwrap());
    assert!(meta.is_err());
}
