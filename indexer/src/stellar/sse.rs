//! Horizon Server-Sent Events: an open `/operations` stream read in bounded batches.
//! Framing: blocks separated by a blank line, `id:` / `data:` lines; the `open` event
//! carries `"hello"` and `retry:` lines are ignored.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};

use super::horizon::{decode_operation, DecodedOp};
use crate::sync::SourceError;
use crate::upstream::UpstreamClient;

/// An open operation stream.
pub struct OperationStream {
    response: reqwest::Response,
    buf: String,
}

/// What a read brought.
pub enum Batch {
    /// Operations (possibly none when nothing happened within the wait).
    Ops(Vec<DecodedOp>),
    /// The stream ended or broke; reopen or poll.
    Closed,
}

impl OperationStream {
    /// Opens `/operations?cursor=` as a stream; `None` when the server does not stream.
    pub async fn open(client: &UpstreamClient, cursor: i64) -> Result<Option<Self>, SourceError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = client
            .get_raw(&format!("/operations?cursor={cursor}"), headers)
            .await?;
        let streams = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        Ok(streams.then(|| Self {
            response,
            buf: String::new(),
        }))
    }

    /// Reads events for at most `wait` or until `max` operations arrived.
    pub async fn next_batch(&mut self, wait: Duration, max: usize) -> Result<Batch, SourceError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut ops = Vec::new();
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                if let Some(op) = parse_block(&block)? {
                    ops.push(op);
                }
            }
            if ops.len() >= max {
                return Ok(Batch::Ops(ops));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Batch::Ops(ops));
            }
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => return Ok(Batch::Ops(ops)),
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    return Ok(if ops.is_empty() {
                        Batch::Closed
                    } else {
                        Batch::Ops(ops)
                    })
                }
            }
        }
    }
}

/// Decodes one event block; `None` for `open`/`retry`/comment blocks.
pub fn parse_block(block: &str) -> Result<Option<DecodedOp>, SourceError> {
    let data: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.is_empty() {
        return Ok(None);
    }
    let joined = data.join("\n");
    if joined == "\"hello\"" || joined == "\"byebye\"" {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&joined)
        .map_err(|e| SourceError::Malformed(format!("stream event: {e}")))?;
    decode_operation(&v)
        .map(Some)
        .map_err(|e| SourceError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_decode_and_control_events_are_skipped() {
        assert!(parse_block("retry: 1000\nevent: open\ndata: \"hello\"\n\n")
            .unwrap()
            .is_none());
        let op = parse_block(
            "id: 8589938689\ndata: {\"id\":\"8589938689\",\"paging_token\":\"8589938689\",\
             \"type\":\"payment\",\"source_account\":\"GA\",\
             \"from\":\"GA\",\"to\":\"GB\",\"asset_type\":\"native\",\"amount\":\"1.0000000\",\
             \"transaction_hash\":\"ab\",\"transaction_successful\":true,\
             \"created_at\":\"2025-01-01T00:00:10Z\"}\n\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(op.id, 8_589_938_689);
        assert!(parse_block("data: {not json}\n\n").is_err());
    }
}
