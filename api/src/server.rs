//! The axum application: routes, middleware and graceful shutdown.

use std::time::{Duration, Instant};

use async_graphql_axum::{GraphQLBatchRequest, GraphQLResponse};
use axum::extract::WebSocketUpgrade;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orrery_indexer::metrics::Metrics;
use serde_json::json;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{Authenticator, Caller, ClientAddr, Role};
use crate::graphql::http::{self as graphql_http, HttpGet, Rejection};
use crate::graphql::response_cache::{OperationKind, ResponseCache};
use crate::graphql::OrrerySchema;
use crate::health::{self, HealthStatus};
use crate::state::AppState;

#[derive(Clone)]
struct Ctx {
    state: AppState,
    schema: OrrerySchema,
    /// Subscriptions over `/graphql/ws`: one execution per distinct subscription.
    fanout: Option<crate::ws_fanout::Fanout<OrrerySchema>>,
    auth: Arc<Authenticator>,
    /// Whole responses of repeated queries (`graphql.response_cache_ms`).
    responses: Option<Arc<ResponseCache>>,
}

/// Builds the router with every route and layer.
pub fn router(state: AppState, schema: OrrerySchema, auth: Arc<Authenticator>) -> Router {
    let config = state.config.clone();
    let responses = ResponseCache::new(&config.graphql);
    if let Some(cache) = &responses {
        cache.follow(&state.bus);
    }
    let ctx = Ctx {
        responses,
        state,
        schema: schema.clone(),
        fanout: config
            .subscriptions
            .share_executions
            .then(|| crate::ws_fanout::Fanout::new(schema.clone())),
        auth,
    };
    let cors = {
        let origins = &config.http.cors_allowed_origins;
        let layer = CorsLayer::new()
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
        if origins.iter().any(|o| o == "*") {
            layer.allow_origin(Any)
        } else {
            let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
            layer.allow_origin(AllowOrigin::list(list))
        }
    };
    Router::new()
        .route("/", get(status_page))
        .route("/assets/{name}", get(crate::web::assets::serve))
        .route("/graphql/assets/{name}", get(crate::web::assets::serve))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .route("/metrics", get(metrics))
        .route("/api/v1/health", get(api_health))
        .with_state(ctx)
        .layer(middleware::from_fn(record_http_metrics))
        .layer(RequestBodyLimitLayer::new(config.http.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout(),
        ))
        .layer(middleware::from_fn({
            let limit = config.http.body_limit_bytes;
            move |req, next| graphql_http::graphql_errors(limit, req, next)
        }))
        .layer(CompressionLayer::new())
        .layer(cors)
        .layer(TraceLayer::new_for_http())
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // The matched route template, never the raw path: bounded label cardinality.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let response = next.run(req).await;
    let m = Metrics::global();
    m.http_requests
        .with_label_values(&[method.as_str(), route, response.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[method.as_str(), route])
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn graphql(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    req: GraphQLBatchRequest<Rejection>,
) -> Response {
    execute(ctx, peer, headers, req.into_inner()).await
}

/// Runs a decoded request (POST body or GET query string) for the caller its headers name.
async fn execute(
    ctx: Ctx,
    peer: SocketAddr,
    headers: HeaderMap,
    batch: async_graphql::BatchRequest,
) -> Response {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = ctx.auth.authenticate(header, Some(peer.ip())).await;
    if !ctx.state.config.auth.public_queries {
        let allowed = match &caller {
            Caller::Authenticated(p) => p.role >= Role::Viewer,
            _ => false,
        };
        if !allowed {
            let reason = match &caller {
                Caller::Rejected(r) => r.clone(),
                _ => "authentication required: queries need a viewer token (auth.public_queries = false)".to_string(),
            };
            let err = async_graphql::ServerError::new(reason, None);
            let mut err = err;
            err.extensions = Some({
                let mut ext = async_graphql::ErrorExtensionValues::default();
                ext.set("code", "UNAUTHENTICATED");
                ext
            });
            return GraphQLResponse::from(async_graphql::Response::from_errors(vec![err]))
                .into_response();
        }
    }
    if let Err(refused) = graphql_http::check_batch(&ctx.state.config.graphql, &batch) {
        return refused;
    }
    let batch = batch.data(caller).data(ClientAddr(Some(peer.ip())));
    match (batch, &ctx.responses) {
        (async_graphql::BatchRequest::Single(request), Some(cache)) => {
            cached(&ctx.schema, cache, header, request).await
        }
        (batch, _) => GraphQLResponse::from(ctx.schema.execute_batch(batch).await).into_response(),
    }
}

/// Runs one request through the response cache: a hit is answered from it, a miss runs and
/// (when it is a successful query) is kept.
async fn cached(
    schema: &OrrerySchema,
    cache: &ResponseCache,
    authorization: Option<&str>,
    request: async_graphql::Request,
) -> Response {
    let Some(key) = ResponseCache::key(authorization, &request) else {
        return GraphQLResponse::from(schema.execute(request).await).into_response();
    };
    let m = Metrics::global();
    if let Some(hit) = cache.get(&key) {
        m.graphql_response_cache.with_label_values(&["hit"]).inc();
        let name = request.operation_name.as_deref().unwrap_or("anonymous");
        let name = crate::graphql::metrics_ext::label(name);
        m.graphql_requests.with_label_values(&[name, "ok"]).inc();
        return hit;
    }
    m.graphql_response_cache.with_label_values(&["miss"]).inc();
    let generation = cache.generation();
    let kind = Arc::new(OperationKind::new(request.operation_name.as_deref()));
    let response = schema.execute(request.data(kind.clone())).await;
    cache.answer(key, generation, &kind, response)
}

/// `GET /graphql`: a query in the URL (`?query=...` or a persisted query's
/// `?extensions=...`) runs like a POST (mutations refused); without one, GraphiQL.
async fn graphql_get(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let has_query = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.starts_with("query=") || kv.starts_with("extensions="))
    });
    if !has_query {
        return graphiql(State(ctx)).await;
    }
    use axum::extract::FromRequest;
    match GraphQLBatchRequest::<Rejection>::from_request(request, &()).await {
        Ok(req) => execute(ctx, peer, headers, req.into_inner().data(HttpGet)).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// Subscriptions. The token, when any, travels in the `connection_init` payload as
/// `Authorization` (`Bearer <token>`) or `authToken`; without `auth.public_queries` a viewer
/// token is required to connect.
async fn graphql_ws(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = crate::ws::protocol(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Protocol must be graphql-transport-ws or graphql-ws",
        )
            .into_response();
    };
    let auth = ctx.auth.clone();
    let config = &ctx.state.config;
    let public = config.auth.public_queries;
    let limits = crate::ws::WsLimits {
        max_queued_frames: config.subscriptions.max_queued_frames,
        max_message_bytes: config.http.body_limit_bytes,
    };
    let init = move |payload: serde_json::Value| async move {
        let token = ["Authorization", "authorization", "authToken"]
            .iter()
            .find_map(|k| payload.get(*k).and_then(|v| v.as_str()))
            .map(|t| {
                if t.starts_with("Bearer ") {
                    t.to_string()
                } else {
                    format!("Bearer {t}")
                }
            });
        let caller = auth.authenticate(token.as_deref(), Some(peer.ip())).await;
        let allowed = match &caller {
            Caller::Authenticated(p) => p.role >= Role::Viewer,
            Caller::Anonymous => public,
            Caller::Rejected(_) => false,
        };
        if !allowed {
            let reason = match &caller {
                Caller::Rejected(r) => r.clone(),
                _ => "authentication required: subscriptions need a viewer token".to_string(),
            };
            return Err(async_graphql::Error::new(reason));
        }
        let mut data = async_graphql::Data::default();
        data.insert(caller);
        data.insert(ClientAddr(Some(peer.ip())));
        Ok(data)
    };
    match &ctx.fanout {
        Some(fanout) => {
            let shared: Arc<dyn crate::ws_fanout::Join> = Arc::new(fanout.clone());
            crate::ws::respond(
                upgrade,
                fanout.clone(),
                protocol,
                limits,
                Some(shared),
                init,
            )
        }
        None => crate::ws::respond(upgrade, ctx.schema.clone(), protocol, limits, None, init),
    }
}

async fn graphiql(State(ctx): State<Ctx>) -> Response {
    crate::web::graphiql::page(ctx.state.config.graphql.graphiql)
}

/// The status page (`GET /`), rendered from public queries.
async fn status_page(State(ctx): State<Ctx>) -> Response {
    let settings = crate::web::status::PageSettings {
        public_queries: ctx.state.config.auth.public_queries,
        dex_pairs: ctx.state.config.stellar.dex_pairs.clone(),
    };
    crate::web::status::page(&ctx.schema, &settings)
        .await
        .into_response()
}

/// Liveness: the process answers.
async fn liveness() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database and the bus answer.
async fn readiness(State(ctx): State<Ctx>) -> Response {
    let (db, bus) = tokio::join!(
        health::check_database(&ctx.state),
        health::check_bus(&ctx.state)
    );
    let ready = db.status == HealthStatus::Healthy && bus.status == HealthStatus::Healthy;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "ready": ready,
            "database": db,
            "bus": bus,
        })),
    )
        .into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let m = Metrics::global();
    let (size, idle, max) = pool_stats(&ctx.state);
    m.db_pool
        .with_label_values(&["in_use"])
        .set(size.saturating_sub(idle) as i64);
    m.db_pool.with_label_values(&["idle"]).set(idle as i64);
    m.db_pool.with_label_values(&["max"]).set(max as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// (open connections, idle connections, configured maximum) of the database pool.
fn pool_stats(state: &AppState) -> (u32, u32, u32) {
    let db = &state.db;
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (
                pool.size(),
                pool.num_idle() as u32,
                pool.options().get_max_connections(),
            )
        }
        sea_orm::DatabaseBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (
                pool.size(),
                pool.num_idle() as u32,
                pool.options().get_max_connections(),
            )
        }
        _ => (0, 0, 0),
    }
}

/// The ERC-8004 seed's health shape (`status`, `timestamp`, `database`, `redis`), extended
/// with the UBEC seed's per-service breakdown and summary.
async fn api_health(State(ctx): State<Ctx>) -> Response {
    let report = ctx.state.health.latest();
    let connected = |name: &str| match report.component(name) {
        Some(c) if c.status == HealthStatus::Healthy => "connected",
        _ => "disconnected",
    };
    let redis = if ctx.state.bus.kind() == "redis" {
        connected("bus")
    } else {
        "not_configured"
    };
    let services: serde_json::Map<String, serde_json::Value> = report
        .components
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                json!({ "status": c.status, "message": c.message, "latency_ms": c.latency_ms }),
            )
        })
        .collect();
    let body = json!({
        "status": report.status,
        "timestamp": report.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "database": connected("database"),
        "redis": redis,
        "version": report.version,
        "uptime_seconds": report.uptime_seconds,
        "services": services,
        "summary": report.summary,
    });
    (report.status.http_status(), Json(body)).into_response()
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits at most `grace` for
/// in-flight requests (open WebSockets are cut after that).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let mut server = Box::pin(std::future::IntoFuture::into_future(server));
    tokio::select! {
        res = &mut server => return res,
        _ = shutdown => {
            tracing::info!(grace_secs = grace.as_secs(), "shutdown signal received; draining");
            let _ = stop_tx.send(());
        }
    }
    match tokio::time::timeout(grace, server).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!("grace period over; closing remaining connections");
            Ok(())
        }
    }
}
