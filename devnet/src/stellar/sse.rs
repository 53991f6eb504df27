//! Horizon Server-Sent Events streaming of operations and payments.
//!
//! Framing follows Horizon (`services/horizon/internal/render/sse`): a
//! `retry: 1000` line and an `open` event carrying `"hello"`, then one
//! `id: <paging_token>` / `data: <json>` event per operation as ledgers close.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::routes::{operation_json, problem};
use crate::control::Shared;

/// First frame of every stream.
pub const HELLO: &str = "retry: 1000\nevent: open\ndata: \"hello\"\n\n";

struct StreamState {
    shared: Arc<Shared>,
    account: Option<u32>,
    payments_only: bool,
    cursor: i64,
    hello_sent: bool,
    ledgers: tokio::sync::watch::Receiver<u32>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl StreamState {
    /// Renders the events after the cursor (at most 200), advancing it.
    fn next_events(&mut self) -> String {
        let Ok(chain) = self.shared.stellar.read() else {
            return String::new();
        };
        let base = self.shared.horizon_base.get().cloned().unwrap_or_default();
        let mut out = String::new();
        let mut n = 0;
        let ids: Box<dyn Iterator<Item = usize>> = match self.account {
            Some(a) => {
                let list = &chain.accounts[a as usize].ops;
                let start = list.partition_point(|&i| chain.ops[i as usize].id <= self.cursor);
                Box::new(list[start..].iter().map(|&i| i as usize))
            }
            None => Box::new(chain.ops_after(self.cursor)..chain.ops.len()),
        };
        for i in ids {
            let op = &chain.ops[i];
            if self.payments_only && !op.is_payment() {
                continue;
            }
            let json = operation_json(&chain, &base, op);
            out.push_str(&format!("id: {}\ndata: {}\n\n", op.id, json));
            self.cursor = op.id;
            n += 1;
            if n == 200 {
                break;
            }
        }
        out
    }
}

/// Starts an SSE response for `/operations`, `/payments` or their account variants.
pub fn stream(
    shared: Arc<Shared>,
    account: Option<String>,
    payments_only: bool,
    q: &HashMap<String, String>,
) -> Response {
    let (account, now) = {
        let Ok(chain) = shared.stellar.read() else {
            return problem(StatusCode::INTERNAL_SERVER_ERROR, None);
        };
        let account = match account {
            Some(id) => match chain.account_index(&id) {
                Ok(i) => Some(i),
                Err(_) => return problem(StatusCode::NOT_FOUND, None),
            },
            None => None,
        };
        (account, chain.ops.last().map_or(0, |o| o.id))
    };
    let cursor = match q.get("cursor").map(String::as_str) {
        None | Some("") => 0,
        Some("now") => now,
        Some(s) => match s.parse::<i64>() {
            Ok(c) if c >= 0 => c,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(("cursor", "cursor: invalid value")),
                )
            }
        },
    };
    let state = StreamState {
        ledgers: shared.ledger_tx.subscribe(),
        shutdown: shared.shutdown.clone(),
        shared,
        account,
        payments_only,
        cursor,
        hello_sent: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        if !st.hello_sent {
            st.hello_sent = true;
            return Some((Ok::<_, Infallible>(HELLO.to_string()), st));
        }
        loop {
            if *st.shutdown.borrow() {
                return None;
            }
            let events = st.next_events();
            if !events.is_empty() {
                return Some((Ok(events), st));
            }
            tokio::select! {
                r = st.ledgers.changed() => if r.is_err() { return None; },
                _ = st.shutdown.changed() => return None,
            }
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
