//! [`UpstreamClient`]: the one HTTP client every source uses.
//!
//! Per request: circuit breaker admission (fail fast when open) -> rate-limit token ->
//! send with a per-request timeout -> classify the outcome:
//!
//! | outcome                                   | breaker  | retried | metric `status`   |
//! |-------------------------------------------|----------|---------|-------------------|
//! | 2xx with a decodable body                 | success  | -       | the code          |
//! | 2xx with a truncated/undecodable body     | failure  | yes     | `decode`/`error`  |
//! | 429                                       | neutral  | yes, after `Retry-After` | `429` |
//! | 5xx                                       | failure  | yes     | the code          |
//! | timeout                                   | failure  | yes     | `timeout`         |
//! | connect/transport error                   | failure  | yes     | `error`           |
//! | other 4xx                                 | success  | no      | the code          |
//! | breaker open                              | -        | no      | `circuit_open`    |
//!
//! Retries wait an exponential backoff with full jitter (429s wait what the server asked
//! instead) and move to the next base URL when several are configured. `X-Ratelimit-*`
//! headers of every response feed the rate limiter.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::backoff::Backoff;
use super::breaker::CircuitBreaker;
use super::rate_limit::RateLimiter;
use crate::metrics::Metrics;

/// Longest body excerpt kept in errors.
const SNIPPET_CHARS: usize = 500;
/// Longest wait a `Retry-After` or `X-Ratelimit-Reset` may impose.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);
/// `X-Ratelimit-Reset` values above this are Unix timestamps rather than seconds from now.
const RESET_EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// How to reach and how to treat one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Name used in metrics, logs, errors and the breaker's persisted row.
    pub name: String,
    /// Base URLs tried in order; a failing one hands over to the next.
    pub base_urls: Vec<Url>,
    /// Local budget (token refill per hour) at start; 0 disables it (server signals still
    /// apply). Changed at run time through [`RateLimiter::set_rate`].
    pub requests_per_hour: u32,
    /// Token bucket size: requests allowed back to back.
    pub burst: u32,
    /// Per-request timeout (connect, headers and body).
    pub timeout: Duration,
    /// Retries after the first attempt of a request.
    pub max_retries: u32,
    /// Ceiling of the first retry delay (doubles per retry).
    pub backoff_base: Duration,
    /// Upper bound of any retry delay.
    pub backoff_max: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_recovery: Duration,
    /// `User-Agent` header sent.
    pub user_agent: String,
}

impl UpstreamConfig {
    /// Default budget: 3000 requests per hour (Horizon's public limit).
    pub const DEFAULT_REQUESTS_PER_HOUR: u32 = 3000;
    /// Default burst.
    pub const DEFAULT_BURST: u32 = 10;
    /// Default per-request timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default retries after the first attempt.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default first backoff ceiling.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
    /// Default backoff cap.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
    /// Default breaker failure threshold.
    pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
    /// Default breaker recovery timeout.
    pub const DEFAULT_BREAKER_RECOVERY: Duration = Duration::from_secs(60);

    /// A configuration with every default for upstream `name` at `base_urls`.
    pub fn new(name: impl Into<String>, base_urls: Vec<Url>) -> Self {
        Self {
            name: name.into(),
            base_urls,
            requests_per_hour: Self::DEFAULT_REQUESTS_PER_HOUR,
            burst: Self::DEFAULT_BURST,
            timeout: Self::DEFAULT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_max: Self::DEFAULT_BACKOFF_MAX,
            breaker_threshold: Self::DEFAULT_BREAKER_THRESHOLD,
            breaker_recovery: Self::DEFAULT_BREAKER_RECOVERY,
            user_agent: super::user_agent(),
        }
    }

    /// The retry schedule this configuration describes.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_max, self.max_retries)
    }
}

/// Why an upstream request failed. Every message names the upstream (and URL when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The breaker is open: no request was sent.
    #[error("upstream {name}: circuit breaker open, next attempt allowed in {retry_in:?}")]
    CircuitOpen {
        /// Upstream name.
        name: String,
        /// Time until a probe may be sent.
        retry_in: Duration,
    },
    /// A non-success HTTP status (4xx other than 429 at once; 5xx after retries).
    #[error("upstream {name}: {url} returned HTTP {status}: {body}")]
    Status {
        /// Upstream name.
        name: String,
        /// Full request URL.
        url: String,
        /// HTTP status code (match `404` to detect unknown resources).
        status: u16,
        /// Response body, truncated to 500 characters.
        body: String,
    },
    /// Still rate limited (HTTP 429) when retries ran out.
    #[error("upstream {name}: {url} rate limited (HTTP 429), retry after {retry_after:?}")]
    RateLimited {
        /// Upstream name.
        name: String,
        /// Full request URL.
        url: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// No complete response within the per-request timeout.
    #[error("upstream {name}: {url} did not answer within {timeout:?}")]
    Timeout {
        /// Upstream name.
        name: String,
        /// Full request URL.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// Connection, TLS or protocol failure, including a body cut short.
    #[error("upstream {name}: request to {url} failed: {error}")]
    Transport {
        /// Upstream name.
        name: String,
        /// Full request URL.
        url: String,
        /// The error and its causes.
        error: String,
    },
    /// A success response whose body is not what was expected (invalid/truncated JSON).
    #[error(
        "upstream {name}: {url} returned an undecodable body: {error}; body starts: {snippet}"
    )]
    Decode {
        /// Upstream name.
        name: String,
        /// Full request URL.
        url: String,
        /// The decoder's message.
        error: String,
        /// Start of the body (500 characters at most).
        snippet: String,
    },
    /// The path could not be turned into a URL.
    #[error("upstream {name}: invalid URL {url:?}: {error}")]
    InvalidUrl {
        /// Upstream name.
        name: String,
        /// The URL as built.
        url: String,
        /// Why it is invalid.
        error: String,
    },
    /// The request body could not be serialized.
    #[error("upstream {name}: cannot encode request body: {error}")]
    Encode {
        /// Upstream name.
        name: String,
        /// The serializer's message.
        error: String,
    },
    /// The configuration cannot produce a client.
    #[error("upstream {name}: invalid configuration: {error}")]
    Config {
        /// Upstream name.
        name: String,
        /// What is wrong.
        error: String,
    },
}

impl UpstreamError {
    /// The HTTP status the upstream answered with, if the failure is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            UpstreamError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Whether the upstream said 404 Not Found (e.g. an account that does not exist).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether trying again later may succeed (everything but client errors, bad URLs and
    /// unencodable bodies).
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::InvalidUrl { .. }
            | UpstreamError::Encode { .. }
            | UpstreamError::Config { .. } => false,
            _ => true,
        }
    }

    /// The upstream the error comes from.
    pub fn upstream(&self) -> &str {
        match self {
            UpstreamError::CircuitOpen { name, .. }
            | UpstreamError::Status { name, .. }
            | UpstreamError::RateLimited { name, .. }
            | UpstreamError::Timeout { name, .. }
            | UpstreamError::Transport { name, .. }
            | UpstreamError::Decode { name, .. }
            | UpstreamError::InvalidUrl { name, .. }
            | UpstreamError::Encode { name, .. }
            | UpstreamError::Config { name, .. } => name,
        }
    }
}

/// Shared, cheaply clonable client of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: UpstreamConfig,
    http: reqwest::Client,
    limiter: RateLimiter,
    breaker: Arc<CircuitBreaker>,
    backoff: Backoff,
    /// Index of the base URL currently preferred.
    current: AtomicUsize,
}

/// What one attempt produced.
enum Attempt<T> {
    /// Final: return this.
    Done(Result<T, UpstreamError>),
    /// Retry after `error`; `upstream_fault` counts against the breaker and fails over.
    Retry {
        error: UpstreamError,
        upstream_fault: bool,
        rate_limited: bool,
    },
}

/// A complete response: status, headers, body.
struct Received {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl UpstreamClient {
    /// Builds the client (HTTP connection pool, limiter, breaker) from `config`.
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        let config_error = |error: String| UpstreamError::Config {
            name: config.name.clone(),
            error,
        };
        if config.base_urls.is_empty() {
            return Err(config_error("no base URL configured".into()));
        }
        if config.timeout.is_zero() {
            return Err(config_error("timeout must be positive".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| config_error(error_chain(&e)))?;
        crate::metrics::Metrics::global().touch_upstream(&config.name);
        let limiter = RateLimiter::new(config.name.clone(), config.requests_per_hour, config.burst);
        let breaker = Arc::new(CircuitBreaker::new(
            config.name.clone(),
            config.breaker_threshold,
            config.breaker_recovery,
        ));
        let backoff = config.backoff();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                limiter,
                breaker,
                backoff,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.config
    }

    /// The circuit breaker (snapshot/restore/subscribe for persistence and status).
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.inner.breaker
    }

    /// The rate limiter (remaining tokens for status display).
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The base URL requests currently go to.
    pub fn current_base_url(&self) -> &Url {
        let urls = &self.inner.config.base_urls;
        &urls[self.inner.current.load(Ordering::Relaxed) % urls.len()]
    }

    /// `GET path_and_query` and decode the JSON body, with retries.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<T, UpstreamError> {
        self.execute(Method::GET, path_and_query, None, decode_json)
            .await
    }

    /// `GET path_and_query` and return the body as text, with retries.
    pub async fn get_text(&self, path_and_query: &str) -> Result<String, UpstreamError> {
        self.execute(Method::GET, path_and_query, None, decode_text)
            .await
    }

    /// `POST path` with a JSON body (e.g. JSON-RPC; `""` posts to the base URL itself) and
    /// decode the JSON answer, with retries.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, UpstreamError> {
        let body = serde_json::to_vec(body).map_err(|e| UpstreamError::Encode {
            name: self.name().to_owned(),
            error: e.to_string(),
        })?;
        self.execute(Method::POST, path, Some(body), decode_json)
            .await
    }

    /// `GET path_and_query` once (no retry) and hand back the response as soon as its
    /// headers arrive, for streaming (SSE). Breaker and rate limiter apply; the timeout
    /// covers only the wait for the headers. A non-2xx answer is an error. Report a stream
    /// that breaks later with `breaker().record_failure(..)`.
    pub async fn get_raw(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let inner = &self.inner;
        let name = self.name();
        let (url, base_index) = self.resolve(path_and_query)?;
        let permit = self.admit()?;
        inner.limiter.acquire().await;
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(
            inner.config.timeout,
            inner.http.get(url.clone()).headers(headers).send(),
        )
        .await;
        self.observe_duration(started);
        let response = match sent {
            Err(_) => {
                let error = self.timeout_error(&url);
                self.count("timeout");
                permit.failure(&error);
                self.fail_over(base_index);
                return Err(error);
            }
            Ok(Err(e)) => {
                let error = self.transport_error(&url, &e);
                self.count(if e.is_timeout() { "timeout" } else { "error" });
                permit.failure(&error);
                self.fail_over(base_index);
                return Err(error);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        self.count(status.as_str());
        self.observe_rate_headers(response.headers());
        if status.is_success() {
            permit.success();
            return Ok(response);
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = match tokio::time::timeout(inner.config.timeout, response.bytes()).await {
            Ok(Ok(bytes)) => snippet(&bytes),
            _ => String::new(),
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            permit.release();
            inner
                .limiter
                .penalize(retry_after.unwrap_or(inner.backoff.ceiling(0)));
            return Err(UpstreamError::RateLimited {
                name: name.to_owned(),
                url: url.to_string(),
                retry_after,
            });
        }
        let error = UpstreamError::Status {
            name: name.to_owned(),
            url: url.to_string(),
            status: status.as_u16(),
            body,
        };
        if status.is_server_error() {
            permit.failure(&error);
            self.fail_over(base_index);
        } else {
            permit.success();
        }
        Err(error)
    }

    /// Breaker admission; counts and builds the fail-fast error.
    fn admit(&self) -> Result<super::breaker::BreakerPermit<'_>, UpstreamError> {
        self.inner.breaker.try_acquire().map_err(|retry_in| {
            self.count("circuit_open");
            UpstreamError::CircuitOpen {
                name: self.name().to_owned(),
                retry_in,
            }
        })
    }

    /// The retry loop shared by every buffered request.
    async fn execute<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        decode: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, UpstreamError> {
        let inner = &self.inner;
        let mut retry: u32 = 0;
        loop {
            let (url, base_index) = self.resolve(path)?;
            let permit = self.admit()?;
            inner.limiter.acquire().await;
            let attempt = self
                .attempt(&method, &url, body.as_deref(), decode, retry)
                .await;
            let (error, upstream_fault, rate_limited) = match attempt {
                Attempt::Done(result) => {
                    // Success, or an answer that retrying will not change: the upstream works.
                    permit.success();
                    return result;
                }
                Attempt::Retry {
                    error,
                    upstream_fault,
                    rate_limited,
                } => (error, upstream_fault, rate_limited),
            };
            if upstream_fault {
                permit.failure(&error);
                self.fail_over(base_index);
            } else {
                permit.release();
            }
            if retry >= inner.config.max_retries {
                tracing::warn!(upstream = %self.name(), %error, attempts = retry + 1, "upstream request failed, giving up");
                return Err(error);
            }
            // A 429 already penalized the limiter: the next `acquire` waits what the server
            // asked. Anything else waits the jittered backoff.
            let delay = if rate_limited {
                Duration::ZERO
            } else {
                let mut rng = rand::rng();
                inner
                    .backoff
                    .delay(retry, &mut rng)
                    .unwrap_or(inner.backoff.ceiling(retry))
            };
            tracing::debug!(upstream = %self.name(), %error, retry = retry + 1, delay_ms = delay.as_millis(), "retrying upstream request");
            Metrics::global()
                .upstream_retries
                .with_label_values(&[self.name()])
                .inc();
            retry += 1;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Sends one request and classifies the outcome (see the module table).
    async fn attempt<T>(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        decode: fn(&[u8]) -> Result<T, String>,
        retry_number: u32,
    ) -> Attempt<T> {
        let inner = &self.inner;
        let mut request = inner.http.request(method.clone(), url.clone());
        request = request.header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.to_vec());
        }
        let started = tokio::time::Instant::now();
        let received = tokio::time::timeout(inner.config.timeout, async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Received {
                status,
                headers,
                body,
            })
        })
        .await;
        self.observe_duration(started);
        let retry = |error, upstream_fault, rate_limited| Attempt::Retry {
            error,
            upstream_fault,
            rate_limited,
        };
        let received = match received {
            Err(_) => {
                self.count("timeout");
                return retry(self.timeout_error(url), true, false);
            }
            Ok(Err(e)) => {
                self.count(if e.is_timeout() { "timeout" } else { "error" });
                return retry(self.transport_error(url, &e), true, false);
            }
            Ok(Ok(received)) => received,
        };
        self.observe_rate_headers(&received.headers);
        let status = received.status;
        let name = self.name().to_owned();
        if status.is_success() {
            return match decode(&received.body) {
                Ok(value) => {
                    self.count(status.as_str());
                    Attempt::Done(Ok(value))
                }
                Err(error) => {
                    self.count("decode");
                    let error = UpstreamError::Decode {
                        name,
                        url: url.to_string(),
                        error,
                        snippet: snippet(&received.body),
                    };
                    retry(error, true, false)
                }
            };
        }
        self.count(status.as_str());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(&received.headers, SystemTime::now());
            inner
                .limiter
                .penalize(retry_after.unwrap_or(inner.backoff.ceiling(retry_number)));
            let error = UpstreamError::RateLimited {
                name,
                url: url.to_string(),
                retry_after,
            };
            return retry(error, false, true);
        }
        let error = UpstreamError::Status {
            name,
            url: url.to_string(),
            status: status.as_u16(),
            body: snippet(&received.body),
        };
        if status.is_server_error() {
            retry(error, true, false)
        } else {
            Attempt::Done(Err(error))
        }
    }

    /// Builds the URL of `path` on the preferred base URL, returning it with that URL's
    /// position. An absolute URL (e.g. a Horizon `_links.next.href`) under one of the base
    /// URLs is moved to the preferred one; any other absolute URL is used as is.
    fn resolve(&self, path: &str) -> Result<(Url, usize), UpstreamError> {
        let urls = &self.inner.config.base_urls;
        let index = self.inner.current.load(Ordering::Relaxed) % urls.len();
        let base = &urls[index];
        let built = if path.starts_with("http://") || path.starts_with("https://") {
            urls.iter()
                .find_map(|candidate| {
                    let prefix = candidate.as_str().trim_end_matches('/');
                    let rest = path.strip_prefix(prefix)?;
                    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
                        .then(|| join(base, rest))
                })
                .unwrap_or_else(|| path.to_owned())
        } else {
            join(base, path)
        };
        let url = Url::parse(&built).map_err(|e| UpstreamError::InvalidUrl {
            name: self.name().to_owned(),
            url: built,
            error: e.to_string(),
        })?;
        Ok((url, index))
    }

    /// Moves to the base URL after `failed` (if several are configured and no concurrent
    /// request already moved on).
    fn fail_over(&self, failed: usize) {
        let n = self.inner.config.base_urls.len();
        if n < 2 {
            return;
        }
        let next = (failed + 1) % n;
        let moved = self
            .inner
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                (current % n == failed).then_some(next)
            })
            .is_ok();
        if moved {
            let next_url = &self.inner.config.base_urls[next];
            tracing::info!(upstream = %self.name(), next = %next_url, "failing over to next base URL");
        }
    }

    fn observe_rate_headers(&self, headers: &HeaderMap) {
        if let Some((limit, remaining, reset)) = rate_limit_headers(headers, SystemTime::now()) {
            self.inner.limiter.observe_headers(limit, remaining, reset);
        }
    }

    fn count(&self, status: &str) {
        Metrics::global()
            .upstream_requests
            .with_label_values(&[self.name(), status])
            .inc();
    }

    fn observe_duration(&self, started: tokio::time::Instant) {
        Metrics::global()
            .upstream_duration
            .with_label_values(&[self.name()])
            .observe(started.elapsed().as_secs_f64());
    }

    fn timeout_error(&self, url: &Url) -> UpstreamError {
        UpstreamError::Timeout {
            name: self.name().to_owned(),
            url: url.to_string(),
            timeout: self.inner.config.timeout,
        }
    }

    fn transport_error(&self, url: &Url, error: &reqwest::Error) -> UpstreamError {
        if error.is_timeout() {
            return self.timeout_error(url);
        }
        UpstreamError::Transport {
            name: self.name().to_owned(),
            url: url.to_string(),
            error: error_chain(error),
        }
    }
}

/// `base` + `/` + `path` without doubling or losing slashes; `""` is the base itself.
fn join(base: &Url, path: &str) -> String {
    if path.is_empty() {
        return base.as_str().to_owned();
    }
    let base = base.as_str().trim_end_matches('/');
    if path.starts_with('?') {
        format!("{base}{path}")
    } else {
        format!("{base}/{}", path.trim_start_matches('/'))
    }
}

fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

fn decode_text(body: &[u8]) -> Result<String, String> {
    String::from_utf8(body.to_vec()).map_err(|e| format!("body is not UTF-8: {e}"))
}

/// The first 500 characters of a body, lossily decoded.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// An error with its chain of causes, `: `-separated.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date, capped at an hour.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = header_str(headers, RETRY_AFTER.as_str())?;
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return None;
        }
        Duration::from_secs_f64(secs.min(MAX_SERVER_WAIT.as_secs_f64()))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_SERVER_WAIT))
}

/// `X-Ratelimit-Limit/Remaining/Reset`: `(limit, remaining, reset-from-now)` when at least
/// `Remaining` is present. `Reset` is seconds from now, or a Unix time when that large; a
/// missing `Reset` counts as one second.
pub(crate) fn rate_limit_headers(
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<(Option<u64>, u64, Duration)> {
    let number = |name: &str| header_str(headers, name)?.parse::<u64>().ok();
    let remaining = number("x-ratelimit-remaining")?;
    let limit = number("x-ratelimit-limit");
    let reset = match number("x-ratelimit-reset") {
        None => Duration::from_secs(1),
        Some(value) if value >= RESET_EPOCH_THRESHOLD => {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(value);
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
        Some(secs) => Duration::from_secs(secs),
    };
    Some((limit, remaining, reset.min(MAX_SERVER_WAIT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &later)]), now),
            Some(Duration::from_secs(90))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "999999999")]), now),
            Some(MAX_SERVER_WAIT)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn rate_limit_headers_in_seconds_or_epoch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[
            ("X-Ratelimit-Limit", "3600"),
            ("X-Ratelimit-Remaining", "12"),
            ("X-Ratelimit-Reset", "30"),
        ]);
        assert_eq!(
            rate_limit_headers(&h, now),
            Some((Some(3600), 12, Duration::from_secs(30)))
        );
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000045"),
        ]);
        assert_eq!(
            rate_limit_headers(&h, now),
            Some((None, 0, Duration::from_secs(45)))
        );
        assert_eq!(
            rate_limit_headers(&headers(&[("x-ratelimit-limit", "10")]), now),
            None
        );
    }

    #[test]
    fn join_keeps_base_paths_and_single_slashes() {
        let base = Url::parse("http://h:1/esplora/api/").unwrap();
        assert_eq!(
            join(&base, "/blocks/tip"),
            "http://h:1/esplora/api/blocks/tip"
        );
        assert_eq!(
            join(&base, "blocks/tip"),
            "http://h:1/esplora/api/blocks/tip"
        );
        assert_eq!(join(&base, ""), "http://h:1/esplora/api/");
        assert_eq!(join(&base, "?a=1"), "http://h:1/esplora/api?a=1");
    }

    #[test]
    fn snippet_truncates_on_char_boundaries() {
        let long = "é".repeat(600);
        let s = snippet(long.as_bytes());
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 3);
        assert!(s.ends_with("..."));
        assert_eq!(snippet(b"short"), "short");
    }

    #[test]
    fn config_defaults_follow_the_seed() {
        let c = UpstreamConfig::new("horizon", vec![Url::parse("https://h.example").unwrap()]);
        assert_eq!(c.requests_per_hour, 3000);
        assert_eq!(c.breaker_threshold, 5);
        assert_eq!(c.breaker_recovery, Duration::from_secs(60));
        assert_eq!(c.timeout, Duration::from_secs(30));
        let empty = UpstreamClient::new(UpstreamConfig::new("none", vec![]));
        assert!(matches!(empty, Err(UpstreamError::Config { .. })));
    }

    #[test]
    fn errors_expose_status_and_name_the_upstream() {
        let e = UpstreamError::Status {
            name: "horizon".into(),
            url: "https://h/accounts/G".into(),
            status: 404,
            body: "not found".into(),
        };
        assert!(e.is_not_found());
        assert!(!e.is_transient());
        assert_eq!(e.upstream(), "horizon");
        let text = e.to_string();
        assert!(
            text.contains("horizon")
                && text.contains("https://h/accounts/G")
                && text.contains("404")
        );
    }
}
