//! The `orrery` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use orrery_indexer::bus::{publish_logged, BusEvent};
use orrery_indexer::config_store::{self, ConfigType};

use crate::auth::{issue_token_for, Role};
use crate::config::{Config, ProcessEnv};
use crate::health::HealthStatus;
use crate::progress::Progress;
use crate::{app, db, graphql, telemetry};

/// Orrery indexes Stellar, EVM chains and Bitcoin into SQL and serves them over GraphQL.
///
/// Configuration comes from `orrery.toml` (or --config) and environment variables:
/// DATABASE_URL, REDIS_URL, JWT_SECRET, ORRERY_LISTEN, ORRERY_LOG, ORRERY_LOG_FORMAT,
/// ORRERY_DEVNET, ORRERY_CONFIG. See the README's configuration reference.
#[derive(Parser, Debug)]
#[command(name = "orrery", version, about, long_about)]
pub struct Cli {
    /// Path of the TOML config file (default: ./orrery.toml when present). Env ORRERY_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Do not show progress of long commands on stderr (a bar on a terminal, plain
    /// `progress:` lines otherwise).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: migrate, start indexers, serve GraphQL, health and metrics.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Write the GraphQL SDL (the committed `schema.graphql`).
    ExportSchema(ExportArgs),
    /// Query a running server's health; exit 0 healthy, 1 degraded, 2 unhealthy or unreachable.
    Health(HealthArgs),
    /// Read and change the database-backed runtime config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mint access tokens for local use.
    #[command(subcommand)]
    Token(TokenCommand),
    /// UTXOracle estimates, price history export and pruning.
    #[command(subcommand)]
    Prices(crate::cli_prices::PricesCommand),
    /// Run the simulated chains standalone and print their URLs (Ctrl-C stops).
    Devnet(DevnetArgs),
    /// Stellar jobs: `backfill` a ledger range from the SEP-54 data lake.
    #[command(subcommand)]
    Stellar(crate::cli_stellar::StellarCommand),
    /// Records sources could not store (`list`), and `replay` of them after a fix.
    #[command(subcommand)]
    Quarantine(crate::cli_quarantine::QuarantineCommand),
}

/// `orrery devnet` flags.
#[derive(Args, Debug)]
pub struct DevnetArgs {
    /// Seed of the generated chains: same seed, same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First port: Horizon on BASE, Esplora on BASE+1, prices on BASE+2, EVM chains from
    /// BASE+10. 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    pub port_base: u16,
    /// Do not produce new ledgers and blocks on a timer (advance only through `/_devnet`).
    #[arg(long)]
    pub manual: bool,
    /// Also write the Stellar ledgers as a SEP-54 data lake into DIR (one ledger per
    /// object, kept current as ledgers close), served at `<horizon>/datalake`.
    #[arg(long, value_name = "DIR")]
    pub datalake: Option<PathBuf>,
}

/// `orrery token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print an HS256 token signed with JWT_SECRET (iss, aud, role claim and role name as
    /// the auth.* settings expect).
    Issue {
        /// Role granted: viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
        /// Subject recorded in the audit log.
        #[arg(long, default_value = "cli")]
        subject: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("unknown role {s:?}: use viewer, operator or admin"))
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    match config_store::parse_duration_secs(s) {
        Some(0) | None => Err(format!("invalid ttl {s:?}: use e.g. 30m, 1h, 7d")),
        Some(secs) => Ok(std::time::Duration::from_secs(secs)),
    }
}

/// `orrery serve` flags.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Start the simulated chains in-process and index them (overrides ORRERY_DEVNET).
    #[arg(long, conflicts_with = "no_devnet")]
    pub devnet: bool,
    /// Do not start the simulated chains.
    #[arg(long)]
    pub no_devnet: bool,
    /// What this replica does: `all` (API and indexing), `api` (queries and subscriptions
    /// only) or `indexer`. On PostgreSQL, indexing replicas share the sources through leases.
    #[arg(long, value_enum, default_value_t = crate::sources::ServeRole::All, env = "ORRERY_ROLE")]
    pub role: crate::sources::ServeRole,
}

/// `orrery export-schema` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Where to write the SDL; `-` for standard output.
    #[arg(long, short, default_value = "schema.graphql")]
    pub output: PathBuf,
    /// Do not write: exit 1 when the file differs from the current schema.
    #[arg(long)]
    pub check: bool,
}

/// `orrery health` flags.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Base URL of the server (default: http:// + the configured listen address).
    #[arg(long)]
    pub url: Option<String>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// `orrery config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print one setting.
    Get {
        /// Dotted key, e.g. `sync.batch_size`.
        key: String,
    },
    /// List settings (optionally under a prefix).
    List {
        /// Only keys starting with this prefix.
        prefix: Option<String>,
    },
    /// Set a setting (validated against its type) and notify running servers.
    Set {
        /// Dotted key.
        key: String,
        /// New value.
        value: String,
        /// Type for a new key: string, integer, decimal, boolean, json, duration.
        #[arg(long = "type", value_name = "TYPE")]
        value_type: Option<String>,
        /// Description for a new key.
        #[arg(long)]
        description: Option<String>,
    },
}

/// Parses arguments, runs, and maps errors to one line on stderr and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::progress::init(!cli.no_progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes already quoted by their parent.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let config = Config::load(path, &ProcessEnv)?;
    telemetry::init(&config.log).map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::ExportSchema(args) => export_schema(args),
        Command::Serve(args) => {
            let mut config = load_config(cli.config.as_deref())?;
            if args.devnet {
                config.devnet.enabled = Some(true);
            } else if args.no_devnet {
                config.devnet.enabled = Some(false);
            }
            app::serve(config, args.role).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(cli.config.as_deref())?;
            let db = db::connect(&config).await?;
            let mut progress = None;
            let applied = db::migrate_stepwise(&db, |done, total, name| {
                let p = progress.get_or_insert_with(|| {
                    Progress::start("migrate", "applying", "migrations", Some(total))
                });
                p.message(name);
                p.set(done);
            })
            .await?;
            config_store::seed_defaults(&db).await?;
            if let Some(p) = progress {
                p.finish(&format!("{applied} migrations applied"));
            }
            println!("migrations applied to {}", db::redact(&config.database_url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => health(cli.config.as_deref(), args).await,
        Command::Config(cmd) => config_command(cli.config.as_deref(), cmd).await,
        Command::Devnet(args) => devnet(args).await,
        Command::Prices(cmd) => crate::cli_prices::run(cli.config.as_deref(), cmd).await,
        Command::Stellar(cmd) => crate::cli_stellar::run(cli.config.as_deref(), cmd).await,
        Command::Quarantine(cmd) => crate::cli_quarantine::run(cli.config.as_deref(), cmd).await,
        Command::Token(TokenCommand::Issue { role, ttl, subject }) => {
            let config = Config::load(cli.config.as_deref(), &ProcessEnv)?;
            let secret = config
                .jwt_secret
                .as_deref()
                .context("JWT_SECRET is not set: tokens are signed with it")?;
            let token = issue_token_for(secret, &subject, role, ttl, &config.auth)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn devnet(args: DevnetArgs) -> anyhow::Result<ExitCode> {
    let mut config = if args.manual {
        orrery_devnet::DevnetConfig {
            seed: args.seed,
            ..Default::default()
        }
    } else {
        crate::sources::live_devnet_config(args.seed)
    };
    if let Some(dir) = args.datalake {
        config.stellar.datalake = Some(orrery_devnet::stellar::datalake::LakeConfig::in_dir(dir));
    }
    if args.port_base != 0 {
        config.ports =
            orrery_devnet::PortConfig::from_base(args.port_base, config.evm_chains.len());
    }
    let devnet = orrery_devnet::Devnet::start(config).await?;
    let urls = devnet.urls();
    println!("horizon         {}", urls.horizon);
    println!(
        "stellar rpc     {} (network {:?})",
        urls.stellar_rpc,
        orrery_devnet::stellar::rpc::PASSPHRASE
    );
    if let Some(lake) = &urls.stellar_datalake {
        println!("stellar lake    {lake} (SEP-54)");
    }
    println!("esplora         {}", urls.esplora);
    println!("exchange prices {}/api/v1/prices", urls.exchange_prices);
    for e in &urls.evm {
        println!(
            "evm {:<11} {} (chain id {}; identity {}, reputation {}, validation {})",
            e.name,
            e.url,
            e.chain_id,
            e.contracts.identity,
            e.contracts.reputation,
            e.contracts.validation
        );
    }
    println!(
        "control API     POST {}/_devnet/... (see devnet/README.md)",
        urls.horizon
    );
    crate::server::shutdown_signal().await;
    devnet.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn export_schema(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let sdl = graphql::sdl();
    if args.output.as_os_str() == "-" {
        print!("{sdl}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        let current = std::fs::read_to_string(&args.output)
            .with_context(|| format!("cannot read {}", args.output.display()))?;
        if current != sdl {
            eprintln!(
                "{} is out of date: run `orrery export-schema`",
                args.output.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(&args.output, sdl)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!("wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

async fn health(
    config_path: Option<&std::path::Path>,
    args: HealthArgs,
) -> anyhow::Result<ExitCode> {
    let base = match args.url {
        Some(u) => u,
        None => {
            let config = Config::load(config_path, &ProcessEnv)?;
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        }
    };
    let url = format!("{}/api/v1/health", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(args.timeout))
        .build()
        .context("cannot build HTTP client")?;
    let body: serde_json::Value = match client.get(&url).send().await {
        Ok(resp) => match resp.json().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("unhealthy: {url} did not return health JSON: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        Err(e) => {
            eprintln!("unhealthy: cannot reach {url}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let status = match body["status"].as_str() {
        Some("healthy") => HealthStatus::Healthy,
        Some("degraded") => HealthStatus::Degraded,
        _ => HealthStatus::Unhealthy,
    };
    if args.json {
        println!("{body}");
    } else {
        println!(
            "overall: {}  ({} healthy, {} degraded, {} unhealthy)",
            body["status"].as_str().unwrap_or("unknown"),
            body["summary"]["healthy"],
            body["summary"]["degraded"],
            body["summary"]["unhealthy"]
        );
        if let Some(services) = body["services"].as_object() {
            for (name, s) in services {
                println!(
                    "  {:<28} {:<10} {}",
                    name,
                    s["status"].as_str().unwrap_or("?"),
                    s["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::from(status.exit_code() as u8))
}

async fn config_command(
    config_path: Option<&std::path::Path>,
    cmd: ConfigCommand,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let (db, bus) = app::open(&config).await?;
    match cmd {
        ConfigCommand::Get { key } => match config_store::get(&db, &key).await? {
            Some(e) => println!("{} = {} ({})", e.key, e.value, e.value_type),
            None => anyhow::bail!("config key {key:?} does not exist"),
        },
        ConfigCommand::List { prefix } => {
            for e in config_store::list(&db, prefix.as_deref()).await? {
                println!(
                    "{} = {} ({}){}",
                    e.key,
                    e.value,
                    e.value_type,
                    e.description
                        .map(|d| format!("  # {d}"))
                        .unwrap_or_default()
                );
            }
        }
        ConfigCommand::Set {
            key,
            value,
            value_type,
            description,
        } => {
            let ty = value_type.as_deref().map(ConfigType::parse).transpose()?;
            let (_, after) =
                config_store::set(&db, &key, &value, ty, description.as_deref(), "cli").await?;
            println!("{} = {} ({})", after.key, after.value, after.value_type);
            publish_logged(bus.as_ref(), BusEvent::new(after)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
