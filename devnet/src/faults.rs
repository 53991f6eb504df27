//! Fault injection: latency, error statuses, hangs, truncated or invalid
//! bodies and dropped connections, scoped per service and path prefix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::rng::mix;

/// The simulated services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Stellar Horizon.
    Horizon,
    /// EVM JSON-RPC (any chain unless `FaultTarget::chain` is set).
    Evm,
    /// Bitcoin Esplora.
    Esplora,
    /// mempool-style exchange prices.
    Exchange,
}

/// Where a fault applies: a service (or all), an EVM chain, a path prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTarget {
    /// Service; None = every service.
    pub service: Option<ServiceKind>,
    /// EVM chain name (only with `service = Evm`); None = every chain.
    pub chain: Option<String>,
    /// Path prefix such as "/accounts"; None = every path. For JSON-RPC the
    /// prefix is matched against "/<method>", e.g. "/eth_getLogs".
    pub path_prefix: Option<String>,
}

impl From<&str> for FaultTarget {
    /// Parses "horizon", "esplora", "exchange", "evm", "evm:sepolia",
    /// "horizon:/accounts", "evm:sepolia:/eth_getLogs" or a bare "/prefix".
    fn from(s: &str) -> Self {
        let mut target = FaultTarget::default();
        let mut rest = s;
        if !rest.starts_with('/') {
            let (svc, tail) = rest.split_once(':').unwrap_or((rest, ""));
            target.service = match svc {
                "horizon" => Some(ServiceKind::Horizon),
                "evm" => Some(ServiceKind::Evm),
                "esplora" => Some(ServiceKind::Esplora),
                "exchange" => Some(ServiceKind::Exchange),
                _ => None,
            };
            rest = tail;
            if target.service == Some(ServiceKind::Evm)
                && !rest.is_empty()
                && !rest.starts_with('/')
            {
                let (chain, tail) = rest.split_once(':').unwrap_or((rest, ""));
                target.chain = Some(chain.to_string());
                rest = tail;
            }
        }
        if !rest.is_empty() {
            target.path_prefix = Some(rest.to_string());
        }
        target
    }
}

/// What to do to matching requests. Fields combine (e.g. latency + 503).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fault {
    /// Delay before answering.
    #[serde(with = "opt_ms", rename = "latency_ms")]
    pub latency: Option<Duration>,
    /// Answer with this status (500, 502, 503, 429...) in the service's error shape.
    pub status: Option<u16>,
    /// Retry-After seconds sent with 429/503 (default 1).
    pub retry_after: Option<u64>,
    /// Trigger on this fraction of matching requests (deterministic from the seed).
    pub probability: Option<f64>,
    /// Trigger on every n-th matching request (1 = all).
    pub every_nth: Option<u64>,
    /// Stop after triggering this many times.
    pub max_triggers: Option<u64>,
    /// Cut the body in half (the client sees truncated JSON).
    pub truncate_body: bool,
    /// Replace the body with something that is not JSON.
    pub invalid_json: bool,
    /// Close the connection without answering.
    pub drop_connection: bool,
    /// Hang this long before answering (a client timeout should fire first).
    #[serde(with = "opt_ms", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// Answer HTTP 200 with a JSON-RPC error of this code instead (e.g. -32603, a Stellar
    /// RPC node's transient internal error).
    pub jsonrpc_error: Option<i64>,
    /// Serve matching records malformed (every time they are served: a permanent data
    /// error, unlike the transport faults above).
    pub corrupt: Option<Corrupt>,
}

/// Rewrites the JSON objects of a response body whose fields equal every `match` pair:
/// removes the `drop` fields and sets the `set` ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Corrupt {
    /// Field values an object must have to be corrupted, e.g. `{"id": "8589938689"}`.
    #[serde(rename = "match")]
    pub matches: serde_json::Map<String, serde_json::Value>,
    /// Fields removed from matching objects.
    pub drop: Vec<String>,
    /// Fields set (added or replaced) on matching objects.
    pub set: serde_json::Map<String, serde_json::Value>,
}

impl Corrupt {
    /// Applies the rewrite to every matching object in `v`; how many were rewritten.
    pub fn apply(&self, v: &mut serde_json::Value) -> usize {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                let mut n = 0;
                if !self.matches.is_empty()
                    && self.matches.iter().all(|(k, want)| m.get(k) == Some(want))
                {
                    for k in &self.drop {
                        m.remove(k);
                    }
                    for (k, x) in &self.set {
                        m.insert(k.clone(), x.clone());
                    }
                    n += 1;
                }
                for x in m.values_mut() {
                    n += self.apply(x);
                }
                n
            }
            Value::Array(a) => a.iter_mut().map(|x| self.apply(x)).sum(),
            _ => 0,
        }
    }
}

mod opt_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[derive(Debug)]
struct Entry {
    target: FaultTarget,
    fault: Fault,
    seen: u64,
    triggered: u64,
}

/// The active faults of a devnet.
#[derive(Debug, Default)]
pub struct FaultSet {
    seed: u64,
    entries: Mutex<Vec<Entry>>,
    decisions: AtomicU64,
}

impl FaultSet {
    /// An empty set whose probabilistic decisions derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }

    /// Adds a fault (later faults do not replace earlier ones; first match wins).
    pub fn set(&self, target: FaultTarget, fault: Fault) {
        if let Ok(mut e) = self.entries.lock() {
            e.push(Entry {
                target,
                fault,
                seen: 0,
                triggered: 0,
            });
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }

    /// The fault to apply to one request, if any.
    pub fn decide(&self, service: ServiceKind, chain: Option<&str>, path: &str) -> Option<Fault> {
        let mut entries = self.entries.lock().ok()?;
        for e in entries.iter_mut() {
            let t = &e.target;
            if t.service.is_some_and(|s| s != service)
                || t.chain.as_deref().is_some_and(|c| Some(c) != chain)
                || t.path_prefix
                    .as_deref()
                    .is_some_and(|p| !path.starts_with(p))
            {
                continue;
            }
            if e.fault.max_triggers.is_some_and(|m| e.triggered >= m) {
                continue;
            }
            e.seen += 1;
            let nth_ok = e.fault.every_nth.is_none_or(|n| n <= 1 || e.seen % n == 0);
            let p_ok = e.fault.probability.is_none_or(|p| {
                let d = self.decisions.fetch_add(1, Ordering::Relaxed);
                ((mix(&[self.seed, 0x4641, d]) >> 11) as f64 / (1u64 << 53) as f64) < p
            });
            if nth_ok && p_ok {
                e.triggered += 1;
                return Some(e.fault.clone());
            }
        }
        None
    }
}

/// Per-service state of the fault middleware.
#[derive(Clone)]
pub struct FaultLayer {
    /// The devnet's faults.
    pub faults: Arc<FaultSet>,
    /// Service this middleware guards.
    pub service: ServiceKind,
    /// EVM chain name.
    pub chain: Option<String>,
    /// Cancelled on shutdown so hangs end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// An error response in the shape the service uses.
pub fn error_response(
    service: ServiceKind,
    status: StatusCode,
    retry_after: Option<u64>,
) -> Response {
    let mut resp = match service {
        ServiceKind::Horizon => crate::stellar::routes::problem(status, None),
        ServiceKind::Evm => {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
                "code": if status == StatusCode::TOO_MANY_REQUESTS { -32005 } else { -32603 },
                "message": status.canonical_reason().unwrap_or("error"),
            }});
            (status, axum::Json(body)).into_response()
        }
        ServiceKind::Esplora | ServiceKind::Exchange => (
            status,
            status.canonical_reason().unwrap_or("error").to_string(),
        )
            .into_response(),
    };
    if matches!(status.as_u16(), 429 | 503) {
        let secs = retry_after.unwrap_or(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// Sleeps unless the devnet shuts down first.
pub async fn sleep_or_shutdown(d: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if *shutdown.borrow() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

/// Axum middleware applying the matching fault, if any.
pub async fn middleware(State(layer): State<FaultLayer>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_devnet") {
        return next.run(req).await;
    }
    let key = if layer.service == ServiceKind::Evm {
        // JSON-RPC: match on the method name, read from the body.
        let (parts, body) = req.into_parts();
        let bytes = match to_bytes(body, 16 * 1024 * 1024).await {
            Ok(b) => b,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        let method = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                let first = if v.is_array() {
                    v.get(0).cloned()
                } else {
                    Some(v)
                };
                first.and_then(|f| f.get("method").and_then(|m| m.as_str()).map(String::from))
            })
            .unwrap_or_default();
        let req = Request::from_parts(parts, Body::from(bytes));
        return apply(layer, format!("/{method}"), req, next).await;
    } else {
        path
    };
    apply(layer, key, req, next).await
}

async fn apply(mut layer: FaultLayer, key: String, req: Request, next: Next) -> Response {
    let Some(fault) = layer
        .faults
        .decide(layer.service, layer.chain.as_deref(), &key)
    else {
        return next.run(req).await;
    };
    if let Some(d) = fault.latency {
        sleep_or_shutdown(d, &mut layer.shutdown).await;
    }
    if let Some(d) = fault.timeout {
        sleep_or_shutdown(d, &mut layer.shutdown).await;
    }
    if fault.drop_connection {
        // Unwinding the connection task closes the socket without a response;
        // resume_unwind skips the panic hook, so nothing is printed.
        std::panic::resume_unwind(Box::new("devnet: injected dropped connection"));
    }
    if let Some(code) = fault.status {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(layer.service, status, fault.retry_after);
    }
    if let Some(code) = fault.jsonrpc_error {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
            "code": code, "message": "internal error (injected by devnet)"}});
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let resp = next.run(req).await;
    if let Some(c) = &fault.corrupt {
        return corrupt_response(c, resp).await;
    }
    if !fault.truncate_body && !fault.invalid_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let new_body = if fault.invalid_json {
        axum::body::Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    } else {
        bytes.slice(..bytes.len() / 2)
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(new_body))
}

/// The response with `c` applied to its JSON body (other bodies pass unchanged).
async fn corrupt_response(c: &Corrupt, resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let new_body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            if c.apply(&mut v) > 0 {
                serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec())
            } else {
                bytes.to_vec()
            }
        }
        Err(_) => bytes.to_vec(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(new_body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn corrupt_rewrites_matching_objects_only() {
        let c: super::Corrupt = serde_json::from_value(serde_json::json!({
            "match": {"id": "7"}, "drop": ["transaction_successful"], "set": {"amount": "x"}
        }))
        .unwrap();
        let mut v = serde_json::json!({"_embedded": {"records": [
            {"id": "6", "transaction_successful": true, "amount": "1"},
            {"id": "7", "transaction_successful": true, "amount": "1"}
        ]}});
        assert_eq!(c.apply(&mut v), 1);
        let recs = &v["_embedded"]["records"];
        assert_eq!(recs[0]["transaction_successful"], true);
        assert!(recs[1].get("transaction_successful").is_none());
        assert_eq!(recs[1]["amount"], "x");
    }

    use super::*;

    #[test]
    fn targets_parse() {
        let t = FaultTarget::from("evm:sepolia:/eth_getLogs");
        assert_eq!(t.service, Some(ServiceKind::Evm));
        assert_eq!(t.chain.as_deref(), Some("sepolia"));
        assert_eq!(t.path_prefix.as_deref(), Some("/eth_getLogs"));
        let t = FaultTarget::from("horizon:/accounts");
        assert_eq!(t.service, Some(ServiceKind::Horizon));
        assert_eq!(t.path_prefix.as_deref(), Some("/accounts"));
        assert_eq!(FaultTarget::from("/x").service, None);
    }

    #[test]
    fn every_nth_and_max_triggers() {
        let set = FaultSet::new(1);
        set.set(
            FaultTarget::from("esplora"),
            Fault {
                status: Some(503),
                every_nth: Some(2),
                max_triggers: Some(2),
                ..Fault::default()
            },
        );
        let hits: Vec<bool> = (0..8)
            .map(|_| set.decide(ServiceKind::Esplora, None, "/blocks").is_some())
            .collect();
        assert_eq!(hits, [false, true, false, true, false, false, false, false]);
        assert!(set.decide(ServiceKind::Horizon, None, "/").is_none());
    }

    #[test]
    fn probability_is_roughly_respected() {
        let set = FaultSet::new(3);
        set.set(
            FaultTarget::default(),
            Fault {
                probability: Some(0.25),
                ..Fault::default()
            },
        );
        let n = (0..4000)
            .filter(|_| set.decide(ServiceKind::Horizon, None, "/").is_some())
            .count();
        assert!((800..1200).contains(&n), "{n}");
    }
}
