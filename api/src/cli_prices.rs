//! `orrery prices ...`: one-shot UTXOracle estimates, history export and pruning.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use orrery_entity::{price_comparison, price_point};
use orrery_indexer::bitcoin::esplora::EsploraClient;
use orrery_indexer::bitcoin::oneshot::Step;
use orrery_indexer::bitcoin::{oneshot, parquet_export, store};
use sea_orm::{AccessMode, DbBackend, IsolationLevel, TransactionTrait};

use crate::app;
use crate::config::{Config, ProcessEnv};
use crate::progress::Progress;

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
    let task = "prices utxoracle";
    let recent = a.recent_blocks.unwrap_or(config.bitcoin.recent_blocks);
    let mut progress = match a.date {
        Some(_) => Progress::start(task, "locating the first block", "look-ups", None),
        None => Progress::start(task, "fetching blocks", "blocks", Some(recent as u64)),
    };
    let mut blocks_stage = a.date.is_none();
    let mut report = |step: Step| match step {
        Step::Locating { probe, of } => {
            progress.set_total(of);
            progress.set(probe);
        }
        Step::Blocks {
            fetched,
            total,
            height,
        } => {
            if !blocks_stage {
                blocks_stage = true;
                progress.stage("fetching blocks", "blocks", Some(total));
            }
            progress.set_total(total);
            progress.message(format!("height {height}"));
            progress.set(fetched);
        }
    };
    let result = match a.date {
        Some(date) => oneshot::daily_with_progress(&client, date, &mut report).await?,
        None => oneshot::recent_with_progress(&client, recent, &mut report).await?,
    };
    progress.finish(&format!("{} blocks", result.blocks));
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

/// Rows read per query while exporting.
const EXPORT_PAGE: u64 = 5_000;

/// A CSV file written page by page to `<output>.partial`, renamed to `<output>` once
/// complete (a failed export leaves no file that looks finished).
struct CsvOut {
    path: PathBuf,
    partial: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl CsvOut {
    fn create(path: &Path, header: &str) -> anyhow::Result<Self> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let mut out = CsvOut {
            path: path.to_path_buf(),
            partial,
            file: Some(std::io::BufWriter::new(file)),
        };
        out.write(&format!("{header}\n"))?;
        Ok(out)
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let partial = &self.partial;
        match &mut self.file {
            Some(f) => f
                .write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", partial.display())),
            None => anyhow::bail!("{} is already closed", partial.display()),
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if let Some(f) = self.file.take() {
            let file = f
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", self.partial.display()))?;
            file.sync_all()
                .with_context(|| format!("cannot write {}", self.partial.display()))?;
        }
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.partial.display(),
                self.path.display()
            )
        })
    }
}

impl Drop for CsvOut {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn write_parquet(
    path: &Path,
    write: impl FnOnce(std::fs::File) -> Result<(), parquet_export::ParquetExportError>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    write(file).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the rows page by page (one read-only snapshot), handing each page to `page`.
async fn read_pages<M, Fut>(
    task: &str,
    total: u64,
    mut fetch: impl FnMut(Option<(DateTime<Utc>, i64)>) -> Fut,
    key: impl Fn(&M) -> (DateTime<Utc>, i64),
    mut page: impl FnMut(&[M]) -> anyhow::Result<()>,
) -> anyhow::Result<u64>
where
    Fut: std::future::Future<Output = Result<Vec<M>, sea_orm::DbErr>>,
{
    let mut progress = Progress::start(task, "reading", "rows", Some(total));
    let mut after = None;
    let mut done = 0u64;
    loop {
        let rows = fetch(after).await?;
        let Some(last) = rows.last() else { break };
        after = Some(key(last));
        page(&rows)?;
        done += rows.len() as u64;
        if done > total {
            progress.set_total(done);
        }
        progress.set(done);
        if (rows.len() as u64) < EXPORT_PAGE {
            break;
        }
    }
    progress.finish(&format!("{done} rows"));
    Ok(done)
}

async fn export(config: &Config, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let from = a
        .from
        .as_deref()
        .map(|s| parse_time("from", s))
        .transpose()?;
    let to = a.to.as_deref().map(|s| parse_time("to", s)).transpose()?;
    let (db, _bus) = app::open(config).await?;
    // One snapshot for the count and every page, so the file is what one query would return.
    let txn = match db.get_database_backend() {
        DbBackend::Postgres => {
            db.begin_with_config(
                Some(IsolationLevel::RepeatableRead),
                Some(AccessMode::ReadOnly),
            )
            .await?
        }
        _ => db.begin().await?,
    };
    let task = "prices export";
    let rows = match a.table {
        ExportTable::Points => {
            let total = store::count_points_in(&txn, from, to).await?;
            let fetch = |after| store::points_page(&txn, from, to, after, EXPORT_PAGE);
            let key = |r: &price_point::Model| (r.at, r.id);
            match a.format {
                ExportFormat::Csv => {
                    let mut out = CsvOut::create(&a.output, store::POINTS_CSV_HEADER)?;
                    let n = read_pages(task, total, fetch, key, |rows| {
                        let mut text = String::new();
                        store::points_csv_rows(rows, &mut text);
                        out.write(&text)
                    })
                    .await?;
                    out.finish()?;
                    n
                }
                ExportFormat::Parquet => {
                    let mut all = Vec::with_capacity(total as usize);
                    let n = read_pages(task, total, fetch, key, |rows| {
                        all.extend_from_slice(rows);
                        Ok(())
                    })
                    .await?;
                    write_parquet(&a.output, |f| parquet_export::write_points(&all, f))?;
                    n
                }
            }
        }
        ExportTable::Comparisons => {
            let total = store::count_comparisons_in(&txn, from, to).await?;
            let fetch = |after| store::comparisons_page(&txn, from, to, after, EXPORT_PAGE);
            let key = |r: &price_comparison::Model| (r.at, r.id);
            match a.format {
                ExportFormat::Csv => {
                    let mut out = CsvOut::create(&a.output, store::COMPARISONS_CSV_HEADER)?;
                    let n = read_pages(task, total, fetch, key, |rows| {
                        let mut text = String::new();
                        store::comparisons_csv_rows(rows, &mut text);
                        out.write(&text)
                    })
                    .await?;
                    out.finish()?;
                    n
                }
                ExportFormat::Parquet => {
                    let mut all = Vec::with_capacity(total as usize);
                    let n = read_pages(task, total, fetch, key, |rows| {
                        all.extend_from_slice(rows);
                        Ok(())
                    })
                    .await?;
                    write_parquet(&a.output, |f| parquet_export::write_comparisons(&all, f))?;
                    n
                }
            }
        }
    };
    txn.rollback().await?;
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
