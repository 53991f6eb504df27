//! Orrery devnet: deterministic simulated chains that speak the real wire
//! formats (Stellar Horizon, EVM JSON-RPC, Bitcoin Esplora, mempool prices),
//! with reorgs and fault injection, for tests, benchmarks and demos.
//!
//! ```no_run
//! # async fn demo() -> Result<(), orrery_devnet::DevnetError> {
//! let devnet = orrery_devnet::Devnet::start(Default::default()).await?;
//! let urls = devnet.urls();
//! println!("horizon at {}", urls.horizon);
//! devnet.control().advance_ledgers(3)?;
//! devnet.shutdown().await;
//! # Ok(()) }
//! ```

pub mod bitcoin;
pub mod config;
pub mod control;
pub mod encode;
pub mod error;
pub mod evm;
pub mod faults;
pub mod rng;
pub mod stellar;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{BitcoinConfig, DevnetConfig, EvmChainConfig, PortConfig, StellarConfig};
pub use control::{DevnetControl, OperationRecord};
pub use error::DevnetError;
pub use faults::{Corrupt, Fault, FaultTarget, ServiceKind};

use bitcoin::model::BitcoinChain;
use control::Shared;
use evm::model::EvmChain;
use faults::{FaultLayer, FaultSet};
use stellar::model::StellarChain;
use stellar::routes::RateWindow;

/// A periodic block-production action.
type Ticker = Box<dyn Fn(&DevnetControl) + Send>;

/// Registry contract addresses of one EVM chain (0x-prefixed lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmContracts {
    /// IdentityRegistry.
    pub identity: String,
    /// ReputationRegistry.
    pub reputation: String,
    /// ValidationRegistry.
    pub validation: String,
}

/// One EVM JSON-RPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvmEndpoint {
    /// Chain name ("sepolia").
    pub name: String,
    /// Chain id.
    pub chain_id: u64,
    /// JSON-RPC URL (POST).
    pub url: String,
    /// Registry addresses.
    pub contracts: EvmContracts,
}

/// Base URLs of the running services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevnetUrls {
    /// Horizon base URL (paths like `/accounts/G...`); also serves `/_devnet/...`.
    pub horizon: String,
    /// Stellar RPC (JSON-RPC, POST) URL: `<horizon>/rpc`, from the same ledger model.
    pub stellar_rpc: String,
    /// The SEP-54 data lake over HTTP (`<horizon>/datalake`), when one is written.
    pub stellar_datalake: Option<String>,
    /// EVM JSON-RPC endpoints in config order.
    pub evm: Vec<EvmEndpoint>,
    /// Esplora base URL (paths like `/blocks/tip/height`, also under `/api`).
    pub esplora: String,
    /// Base URL of the mempool-style price service (`/api/v1/prices`).
    pub exchange_prices: String,
}

/// A running devnet. Dropping it without [`Devnet::shutdown`] leaves the
/// servers running until the runtime ends.
#[derive(Debug)]
pub struct Devnet {
    control: DevnetControl,
    urls: DevnetUrls,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(host: std::net::IpAddr, port: u16) -> Result<(TcpListener, String), DevnetError> {
    let addr = SocketAddr::new(host, port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DevnetError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DevnetError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let host = match local {
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
        SocketAddr::V4(a) => a.ip().to_string(),
    };
    Ok((listener, format!("http://{host}:{}", local.port())))
}

impl Devnet {
    /// Generates the chains and starts every service on its own port.
    pub async fn start(config: DevnetConfig) -> Result<Devnet, DevnetError> {
        let mut names = std::collections::HashSet::new();
        if !config
            .evm_chains
            .iter()
            .all(|c| names.insert(c.name.clone()))
        {
            return Err(DevnetError::Config("EVM chain names must be unique".into()));
        }
        let seed = config.seed;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stellar = StellarChain::new(seed, config.stellar.clone());
        let (ledger_tx, _) = watch::channel(stellar.latest_ledger());
        let evm: Vec<RwLock<EvmChain>> = config
            .evm_chains
            .iter()
            .map(|c| RwLock::new(EvmChain::new(seed, c.clone())))
            .collect();
        let shared = Arc::new(Shared {
            seed,
            stellar: RwLock::new(stellar),
            ledger_tx,
            evm,
            bitcoin: RwLock::new(BitcoinChain::new(seed, config.bitcoin.clone())),
            faults: Arc::new(FaultSet::new(seed)),
            rate: Mutex::new(RateWindow::new(
                config.stellar.rate_limit_per_hour.unwrap_or(1_000_000),
            )),
            horizon_base: OnceLock::new(),
            horizon_requests: Default::default(),
            evm_log_requests: Default::default(),
            shutdown: shutdown_rx.clone(),
        });
        let control = DevnetControl {
            shared: shared.clone(),
        };
        let layer = |service, chain: Option<String>| FaultLayer {
            faults: shared.faults.clone(),
            service,
            chain,
            shutdown: shutdown_rx.clone(),
        };
        let with_faults = |router: Router, l: FaultLayer| {
            router
                .merge(control.router())
                .layer(axum::middleware::from_fn_with_state(l, faults::middleware))
        };
        let mut tasks = Vec::new();
        let mut serve = |listener: TcpListener, router: Router| {
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|v| *v).await;
                    })
                    .await;
            }));
        };

        let ports = &config.ports;
        let (l, horizon) = bind(config.host, ports.horizon).await?;
        let _ = shared.horizon_base.set(horizon.clone());
        serve(
            l,
            with_faults(
                stellar::routes::router(shared.clone())
                    .merge(stellar::rpc::router(shared.clone()))
                    .merge(match &config.stellar.datalake {
                        Some(lake) => stellar::datalake::router(lake.dir.clone()),
                        None => Router::new(),
                    }),
                layer(ServiceKind::Horizon, None),
            ),
        );

        let mut evm_urls = Vec::new();
        for (i, chain_cfg) in config.evm_chains.iter().enumerate() {
            let (l, url) = bind(config.host, ports.evm.get(i).copied().unwrap_or(0)).await?;
            let contracts = {
                let c = shared.evm[i]
                    .read()
                    .map_err(|_| DevnetError::Config("lock".into()))?;
                let a = |k: usize| format!("0x{}", rng::hex(c.contracts[k].as_slice()));
                EvmContracts {
                    identity: a(0),
                    reputation: a(1),
                    validation: a(2),
                }
            };
            serve(
                l,
                with_faults(
                    evm::routes::router(shared.clone(), i),
                    layer(ServiceKind::Evm, Some(chain_cfg.name.clone())),
                ),
            );
            evm_urls.push(EvmEndpoint {
                name: chain_cfg.name.clone(),
                chain_id: chain_cfg.chain_id,
                url,
                contracts,
            });
        }

        let (l, esplora) = bind(config.host, ports.esplora).await?;
        serve(
            l,
            with_faults(
                bitcoin::routes::router(shared.clone()),
                layer(ServiceKind::Esplora, None),
            ),
        );
        let (l, exchange) = bind(config.host, ports.exchange).await?;
        serve(
            l,
            with_faults(
                bitcoin::routes::prices_router(shared.clone()),
                layer(ServiceKind::Exchange, None),
            ),
        );

        if let Some(lake) = &config.stellar.datalake {
            tasks.push(
                stellar::datalake::spawn(shared.clone(), lake.clone())
                    .await
                    .map_err(|e| DevnetError::Config(format!("data lake: {e}")))?,
            );
        }

        // Automatic block production.
        let mut tickers: Vec<(Duration, Ticker)> = Vec::new();
        if let Some(d) = config.ledger_interval {
            tickers.push((
                d,
                Box::new(|c: &DevnetControl| {
                    let _ = c.advance_ledgers(1);
                }),
            ));
        }
        for chain in &config.evm_chains {
            if let Some(d) = chain.block_interval {
                let name = chain.name.clone();
                tickers.push((
                    d,
                    Box::new(move |c: &DevnetControl| {
                        let _ = c.advance_blocks(&name, 1);
                    }),
                ));
            }
        }
        if let Some(d) = config.bitcoin.block_interval {
            tickers.push((
                d,
                Box::new(|c: &DevnetControl| {
                    let _ = c.advance_bitcoin_blocks(1);
                }),
            ));
        }
        for (period, tick) in tickers {
            let c = control.clone();
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.tick().await;
                loop {
                    tokio::select! {
                        _ = interval.tick() => tick(&c),
                        _ = rx.wait_for(|v| *v) => break,
                    }
                }
            }));
        }

        Ok(Devnet {
            control,
            urls: DevnetUrls {
                stellar_rpc: format!("{horizon}/rpc"),
                stellar_datalake: config
                    .stellar
                    .datalake
                    .as_ref()
                    .map(|_| format!("{horizon}/datalake")),
                horizon,
                evm: evm_urls,
                esplora,
                exchange_prices: exchange,
            },
            shutdown_tx,
            tasks,
        })
    }

    /// Base URLs of the services.
    pub fn urls(&self) -> DevnetUrls {
        self.urls.clone()
    }

    /// A handle to drive and inspect the devnet.
    pub fn control(&self) -> DevnetControl {
        self.control.clone()
    }

    /// Stops every service: open streams and hung requests end, in-flight
    /// requests finish (at most 5 s), then the listeners close.
    pub async fn shutdown(self) {
        self.shutdown_tx.send_replace(true);
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}
