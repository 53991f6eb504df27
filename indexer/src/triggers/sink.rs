//! Where actions go: the [`Sink`] extension point and the HTTP webhook sink.

use std::time::Duration;

use async_trait::async_trait;
use orrery_entity::{action_run, trigger};

use super::signature::signature_header;

/// A successful delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Status code of the answer (HTTP sinks), if any.
    pub status: Option<u16>,
}

/// A failed delivery.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The receiver answered with an error status.
    #[error("receiver answered HTTP {0}")]
    Status(u16),
    /// The request did not complete (connect, timeout, body).
    #[error("delivery failed: {0}")]
    Transport(String),
    /// The trigger cannot be delivered at all (bad URL, unknown sink).
    #[error("cannot deliver: {0}")]
    Permanent(String),
}

impl SinkError {
    /// The HTTP status, when the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SinkError::Status(s) => Some(*s),
            _ => None,
        }
    }
}

/// A destination for trigger actions. Implement it to add a sink kind (queue, chat, ...) and
/// register it in [`super::worker::Sinks`] under the kind stored in `trigger.sink`.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The `trigger.sink` value this sink serves.
    fn kind(&self) -> &'static str;
    /// Delivers `body` (the run's JSON payload, serialized) for `run` of `trigger`.
    /// Must be safe to repeat: receivers dedupe on `run.idempotency_key`.
    async fn deliver(
        &self,
        trigger: &trigger::Model,
        run: &action_run::Model,
        body: &[u8],
    ) -> Result<Delivery, SinkError>;
}

/// POSTs the JSON body with `X-Orrery-Signature: sha256=<hex hmac>` and `Idempotency-Key`.
pub struct WebhookSink {
    client: reqwest::Client,
}

impl WebhookSink {
    /// A webhook sink whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, SinkError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("orrery/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Permanent(e.to_string()))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Sink for WebhookSink {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(
        &self,
        trigger: &trigger::Model,
        run: &action_run::Model,
        body: &[u8],
    ) -> Result<Delivery, SinkError> {
        let url = url::Url::parse(&trigger.webhook_url)
            .map_err(|e| SinkError::Permanent(format!("webhook URL: {e}")))?;
        let resp = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(
                "x-orrery-signature",
                signature_header(trigger.secret.as_bytes(), body),
            )
            .header("idempotency-key", &run.idempotency_key)
            .header("x-orrery-trigger", trigger.id.to_string())
            .header("x-orrery-attempt", run.attempts.to_string())
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| SinkError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            Ok(Delivery {
                status: Some(status),
            })
        } else {
            Err(SinkError::Status(status))
        }
    }
}
