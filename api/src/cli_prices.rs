//! `orrery prices ...`: one-shot UTXOracle estimates, history export and pruning.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use orrery_indexer::bitcoin::esplora::EsploraClient;
use orrery_indexer::bitcoin::{oneshot, parquet_export, store};

use crate::app;
use crate::config::{Config, ProcessEnv};

/// `orrery prices` subcommands.
#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Compute a UTXOracle price from Esplora blocks and print it as one JSON line; writes
    /// nothing (the seed's --dry-run).
    Utxoracle(UtxoracleArgs),
    /// Write stored price history to a file.
    Export(ExportArgs),
    /// Delete price points and comparisons older than a date (or than bitcoin.retention_days).
    Prune(PruneArgs),
}

/// `orrery prices utxoracle` flags.
#[derive(Args, Debug)]
pub struct UtxoracleArgs {
    /// UTC day to estimate (YYYY-MM-DD): every block whose time falls on it.
    #[arg(long, conflicts_with = "recent_blocks")]
    pub date: Option<NaiveDate>,
    /// Estimate over the last N blocks instead (the reference's -rb uses 144).
    #[arg(long)]
    pub recent_blocks: Option<usize>,
    /// Esplora base URL (default: bitcoin.esplora_url / ORRERY_ESPLORA_URL).
    #[arg(long)]
    pub esplora_url: Option<String>,
}

/// Export file formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet (one row group, uncompressed; times as TIMESTAMP(MILLIS, UTC)).
    Parquet,
}

/// Which rows to export.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTable {
    /// `price_point` rows.
    Points,
    /// `price_comparison` rows.
    Comparisons,
}

/// `orrery prices export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// First day or time included (YYYY-MM-DD or RFC 3339); default: the oldest row.
    #[arg(long)]
    pub from: Option<String>,
    /// First day or time excluded (YYYY-MM-DD or RFC 3339); default: no bound.
    #[arg(long)]
    pub to: Option<String>,
    /// File format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Rows to export.
    #[arg(long, value_enum, default_value_t = ExportTable::Points)]
    pub table: ExportTable,
    /// Output file.
    #[arg(long)]
    pub output: PathBuf,
}

/// `orrery prices prune` flags.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Delete rows before this day or time (YYYY-MM-DD or RFC 3339); default: now minus
    /// bitcoin.retention_days.
    #[arg(long)]
    pub before: Option<String>,
    /// Before deleting, write the exact rows deleted to DIR/price_points_<before>.csv and
    /// DIR/price_comparisons_<before>.csv (nothing is deleted if that fails).
    #[arg(long, value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
}

/// Parses `YYYY-MM-DD` (UTC midnight) or an RFC 3339 time.
pub fn parse_time(arg: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| anyhow::anyhow!("--{arg} {s:?}: expected YYYY-MM-DD or an RFC 3339 time"))
}

/// Runs a `prices` subcommand.
pub async fn run(config_path: Option<&Path>, cmd: PricesCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path, &ProcessEnv)?;
    match cmd {
        PricesCommand::Utxoracle(a) => utxoracle(&config, a).await,
        PricesCommand::Export(a) => export(&config, a).await,
        PricesCommand::Prune(a) => prune(&config, a).await,
    }
}

async fn utxoracle(config: &Config, a: UtxoracleArgs) -> anyhow::Result<ExitCode> {
    let url = a
        .esplora_url
        .or_else(|| config.bitcoin.esplora_url.clone())
        .context("no Esplora URL: pass --esplora-url or set bitcoin.esplora_url")?;
    let client = EsploraClient::new(&url, 0)?;
    let result = match (a.date, a.recent_blocks) {
        (Some(date), _) => oneshot::daily(&client, date).await?,
        (None, n) => oneshot::recent(&client, n.unwrap_or(config.bitcoin.recent_blocks)).await?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_parquet(
    path: &Path,
    write: impl FnOnce(std::fs::File) -> Result<(), parquet_export::ParquetExportError>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    write(file).with_context(|| format!("cannot write {}", path.display()))
}

async fn export(config: &Config, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let from = a
        .from
        .as_deref()
        .map(|s| parse_time("from", s))
        .transpose()?;
    let to = a.to.as_deref().map(|s| parse_time("to", s)).transpose()?;
    let (db, _bus) = app::open(config).await?;
    let rows = match (a.table, a.format) {
        (ExportTable::Points, format) => {
            let rows = store::points_in(&db, from, to).await?;
            match format {
                ExportFormat::Csv => write_file(&a.output, &store::points_csv(&rows))?,
                ExportFormat::Parquet => {
                    write_parquet(&a.output, |f| parquet_export::write_points(&rows, f))?
                }
            }
            rows.len()
        }
        (ExportTable::Comparisons, format) => {
            let rows = store::comparisons_in(&db, from, to).await?;
            match format {
                ExportFormat::Csv => write_file(&a.output, &store::comparisons_csv(&rows))?,
                ExportFormat::Parquet => {
                    write_parquet(&a.output, |f| parquet_export::write_comparisons(&rows, f))?
                }
            }
            rows.len()
        }
    };
    println!(
        "{}",
        serde_json::json!({"rows": rows, "output": a.output.display().to_string()})
    );
    Ok(ExitCode::SUCCESS)
}

async fn prune(config: &Config, a: PruneArgs) -> anyhow::Result<ExitCode> {
    let before = match a.before.as_deref() {
        Some(s) => parse_time("before", s)?,
        None => Utc::now() - chrono::Duration::days(i64::from(config.bitcoin.retention_days)),
    };
    let (db, _bus) = app::open(config).await?;
    let tag = before.format("%Y%m%dT%H%M%SZ").to_string();
    let archive_dir = a.archive_dir.clone();
    let outcome = store::prune_before(&db, before, |points, comparisons| {
        let Some(dir) = &archive_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join(format!("price_points_{tag}.csv")),
            store::points_csv(points),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            dir.join(format!("price_comparisons_{tag}.csv")),
            store::comparisons_csv(comparisons),
        )
        .map_err(|e| e.to_string())
    })
    .await?;
    println!(
        "{}",
        serde_json::json!({
            "before": before.to_rfc3339(),
            "price_points": outcome.price_points,
            "price_comparisons": outcome.price_comparisons,
        })
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_days_or_rfc3339() {
        assert_eq!(
            parse_time("to", "2025-01-02").unwrap().timestamp(),
            1_735_776_000
        );
        assert_eq!(
            parse_time("to", "2025-01-02T00:00:10Z")
                .unwrap()
                .timestamp(),
            1_735_776_010
        );
        assert!(parse_time("to", "yesterday").is_err());
    }
}
