//! The HTTP side of `/graphql`: every refusal is a GraphQL response (`{"errors": [...]}` with
//! `extensions.code`), never a bare status or a Rust error's debug text.
//!
//! - [`Rejection`] turns a body that cannot be read as a GraphQL request (malformed JSON, a
//!   body over `http.body_limit_bytes`, a batch while batching is off) into such an error;
//! - [`check_batch`] applies `graphql.batch_requests` and `graphql.max_batch_size`;
//! - [`graphql_errors`] rewrites any other non-2xx answer on `/graphql` (a body refused by
//!   the body-limit layer, the HTTP timeout, an unsupported method) the same way.

use async_graphql::{BatchRequest, ParseRequestError};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::GraphqlConfig;

/// `extensions.code` of a request the server could not read.
pub const BAD_REQUEST: &str = "BAD_REQUEST";
/// `extensions.code` of a batch while `graphql.batch_requests` is off.
pub const BATCH_NOT_ALLOWED: &str = "BATCH_NOT_ALLOWED";
/// `extensions.code` of a batch over `graphql.max_batch_size`.
pub const BATCH_TOO_LARGE: &str = "BATCH_TOO_LARGE";

/// Request data marking a query sent with `GET` (mutations are refused: they need `POST`).
#[derive(Debug, Clone, Copy)]
pub struct HttpGet;

/// A GraphQL-shaped error response: `status`, and one error with `code` (and `limit`, the
/// setting at fault, when there is one).
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    limit: Option<(&str, u64)>,
) -> Response {
    let mut extensions = json!({ "code": code });
    if let Some((key, max)) = limit {
        extensions["limit"] = json!(key);
        extensions["max"] = json!(max);
    }
    let body = json!({ "errors": [{ "message": message, "extensions": extensions }] });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// A `/graphql` request body that could not be read, answered as a GraphQL error.
pub struct Rejection(ParseRequestError);

impl From<ParseRequestError> for Rejection {
    fn from(e: ParseRequestError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match &self.0 {
            ParseRequestError::PayloadTooLarge => too_large(),
            ParseRequestError::Io(e) if e.to_string().contains("length limit exceeded") => {
                too_large()
            }
            ParseRequestError::UnsupportedBatch => batch_not_allowed(),
            e => error_response(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                &format!(
                    "cannot read the GraphQL request: {e}; expected a JSON body \
                     {{\"query\": \"...\", \"variables\": {{...}}}} or GET ?query=..."
                ),
                None,
            ),
        }
    }
}

fn too_large() -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        super::limits::QUERY_TOO_LARGE,
        "request body too large: it exceeds http.body_limit_bytes",
        None,
    )
}

fn batch_not_allowed() -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        BATCH_NOT_ALLOWED,
        "batched requests are off (graphql.batch_requests = false): send one operation per request",
        None,
    )
}

/// Refuses a batch when batching is off or the batch is over `graphql.max_batch_size`.
#[allow(clippy::result_large_err)]
pub fn check_batch(config: &GraphqlConfig, batch: &BatchRequest) -> Result<(), Response> {
    let BatchRequest::Batch(items) = batch else {
        return Ok(());
    };
    if !config.batch_requests {
        return Err(batch_not_allowed());
    }
    if items.len() > config.max_batch_size {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            BATCH_TOO_LARGE,
            &format!(
                "batch of {} operations exceeds graphql.max_batch_size = {}",
                items.len(),
                config.max_batch_size
            ),
            Some(("graphql.max_batch_size", config.max_batch_size as u64)),
        ));
    }
    Ok(())
}

/// Middleware: a non-2xx answer to `/graphql` that is not JSON already (the body-limit
/// layer's 413, the HTTP timeout's 408, a 405) becomes a GraphQL error with the same status.
pub async fn graphql_errors(body_limit: usize, req: Request, next: Next) -> Response {
    if req.uri().path() != "/graphql" {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if status.is_success() || is_json || status.is_informational() || status.is_redirection() {
        return response;
    }
    let (code, message, limit) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            super::limits::QUERY_TOO_LARGE,
            format!("request body too large: it exceeds http.body_limit_bytes = {body_limit}"),
            Some(("http.body_limit_bytes", body_limit as u64)),
        ),
        StatusCode::REQUEST_TIMEOUT => (
            super::limits::TIMEOUT,
            "request timed out (http.request_timeout_secs)".to_string(),
            None,
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            BAD_REQUEST,
            "method not allowed: use POST (or GET for queries)".to_string(),
            None,
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            BAD_REQUEST,
            "unsupported content type: send application/json".to_string(),
            None,
        ),
        s if s.is_client_error() => (BAD_REQUEST, format!("request refused: {s}"), None),
        s => ("INTERNAL", format!("request failed: {s}"), None),
    };
    let (parts, body) = response.into_parts();
    // Keep what the inner layer said (e.g. "GraphiQL is disabled"), bounded.
    let said = axum::body::to_bytes(body, 1024)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = match said {
        Some(t) => format!("{message} ({t})"),
        None => message,
    };
    let mut out = error_response(status, code, &message, limit);
    // Keep the CORS and other headers the inner layers set.
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}
