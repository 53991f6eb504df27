//! Price history as Apache Parquet (`orrery prices export --format parquet`).
//!
//! Uses only parquet's low-level writer (no Arrow): one row group, uncompressed, times as
//! `INT64 TIMESTAMP(MILLIS, UTC)`, text as `UTF8`, absent values as nulls. Columns follow
//! the CSV export (see [`POINTS_SCHEMA`], [`COMPARISONS_SCHEMA`]).

use std::io::Write;
use std::sync::Arc;

use orrery_entity::{price_comparison, price_point};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;

/// Parquet schema of exported price points (same columns as the CSV).
pub const POINTS_SCHEMA: &str = "message price_point {
  required int64 id;
  required binary pair (UTF8);
  required binary source (UTF8);
  required int64 at (TIMESTAMP(MILLIS,true));
  required double price;
  optional double confidence;
  optional double volume;
  optional binary details (UTF8);
}";

/// Parquet schema of exported comparisons (same columns as the CSV).
pub const COMPARISONS_SCHEMA: &str = "message price_comparison {
  required int64 id;
  required int64 at (TIMESTAMP(MILLIS,true));
  required binary pair (UTF8);
  optional double utxoracle_price;
  optional double exchange_price;
  optional double diff;
  optional double diff_percent;
  optional double confidence;
  required boolean is_valid;
  optional binary reason (UTF8);
  required int64 updated_at (TIMESTAMP(MILLIS,true));
}";

/// Why a Parquet export failed.
#[derive(Debug, thiserror::Error)]
pub enum ParquetExportError {
    /// The Parquet writer failed (including I/O on the output).
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    /// The writer handed out fewer columns than the schema declares (a bug).
    #[error("parquet: schema has fewer columns than written")]
    MissingColumn,
}

type Rg<'a, W> = SerializedRowGroupWriter<'a, W>;

fn next<'a, 'b, W: Write + Send>(
    rg: &'b mut Rg<'a, W>,
) -> Result<parquet::file::writer::SerializedColumnWriter<'b>, ParquetExportError> {
    rg.next_column()?.ok_or(ParquetExportError::MissingColumn)
}

fn i64s<W: Write + Send>(rg: &mut Rg<'_, W>, v: &[i64]) -> Result<(), ParquetExportError> {
    let mut c = next(rg)?;
    c.typed::<Int64Type>().write_batch(v, None, None)?;
    c.close()?;
    Ok(())
}

fn f64s<W: Write + Send>(rg: &mut Rg<'_, W>, v: &[f64]) -> Result<(), ParquetExportError> {
    let mut c = next(rg)?;
    c.typed::<DoubleType>().write_batch(v, None, None)?;
    c.close()?;
    Ok(())
}

fn opt_f64s<W: Write + Send>(
    rg: &mut Rg<'_, W>,
    v: &[Option<f64>],
) -> Result<(), ParquetExportError> {
    let values: Vec<f64> = v.iter().flatten().copied().collect();
    let defs: Vec<i16> = v.iter().map(|x| i16::from(x.is_some())).collect();
    let mut c = next(rg)?;
    c.typed::<DoubleType>()
        .write_batch(&values, Some(&defs), None)?;
    c.close()?;
    Ok(())
}

fn strs<W: Write + Send>(rg: &mut Rg<'_, W>, v: &[&str]) -> Result<(), ParquetExportError> {
    let values: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(*s)).collect();
    let mut c = next(rg)?;
    c.typed::<ByteArrayType>()
        .write_batch(&values, None, None)?;
    c.close()?;
    Ok(())
}

fn opt_strs<W: Write + Send>(
    rg: &mut Rg<'_, W>,
    v: &[Option<String>],
) -> Result<(), ParquetExportError> {
    let values: Vec<ByteArray> = v
        .iter()
        .flatten()
        .map(|s| ByteArray::from(s.as_str()))
        .collect();
    let defs: Vec<i16> = v.iter().map(|x| i16::from(x.is_some())).collect();
    let mut c = next(rg)?;
    c.typed::<ByteArrayType>()
        .write_batch(&values, Some(&defs), None)?;
    c.close()?;
    Ok(())
}

fn bools<W: Write + Send>(rg: &mut Rg<'_, W>, v: &[bool]) -> Result<(), ParquetExportError> {
    let mut c = next(rg)?;
    c.typed::<BoolType>().write_batch(v, None, None)?;
    c.close()?;
    Ok(())
}

fn writer<W: Write + Send>(
    schema: &str,
    out: W,
) -> Result<SerializedFileWriter<W>, ParquetExportError> {
    let schema = Arc::new(parse_message_type(schema)?);
    let props = Arc::new(WriterProperties::builder().build());
    Ok(SerializedFileWriter::new(out, schema, props)?)
}

/// Writes price points to `out` as one Parquet file ([`POINTS_SCHEMA`]; `details` as JSON
/// text).
pub fn write_points<W: Write + Send>(
    rows: &[price_point::Model],
    out: W,
) -> Result<(), ParquetExportError> {
    let mut w = writer(POINTS_SCHEMA, out)?;
    let mut rg = w.next_row_group()?;
    i64s(&mut rg, &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    strs(
        &mut rg,
        &rows.iter().map(|r| r.pair.as_str()).collect::<Vec<_>>(),
    )?;
    strs(
        &mut rg,
        &rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(),
    )?;
    i64s(
        &mut rg,
        &rows
            .iter()
            .map(|r| r.at.timestamp_millis())
            .collect::<Vec<_>>(),
    )?;
    f64s(&mut rg, &rows.iter().map(|r| r.price).collect::<Vec<_>>())?;
    opt_f64s(
        &mut rg,
        &rows.iter().map(|r| r.confidence).collect::<Vec<_>>(),
    )?;
    opt_f64s(&mut rg, &rows.iter().map(|r| r.volume).collect::<Vec<_>>())?;
    opt_strs(
        &mut rg,
        &rows
            .iter()
            .map(|r| r.details.as_ref().map(|d| d.to_string()))
            .collect::<Vec<_>>(),
    )?;
    rg.close()?;
    w.close()?;
    Ok(())
}

/// Writes comparisons to `out` as one Parquet file ([`COMPARISONS_SCHEMA`]).
pub fn write_comparisons<W: Write + Send>(
    rows: &[price_comparison::Model],
    out: W,
) -> Result<(), ParquetExportError> {
    let mut w = writer(COMPARISONS_SCHEMA, out)?;
    let mut rg = w.next_row_group()?;
    i64s(&mut rg, &rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    i64s(
        &mut rg,
        &rows
            .iter()
            .map(|r| r.at.timestamp_millis())
            .collect::<Vec<_>>(),
    )?;
    strs(
        &mut rg,
        &rows.iter().map(|r| r.pair.as_str()).collect::<Vec<_>>(),
    )?;
    for col in [
        |r: &price_comparison::Model| r.utxoracle_price,
        |r: &price_comparison::Model| r.exchange_price,
        |r: &price_comparison::Model| r.diff,
        |r: &price_comparison::Model| r.diff_percent,
        |r: &price_comparison::Model| r.confidence,
    ] {
        opt_f64s(&mut rg, &rows.iter().map(col).collect::<Vec<_>>())?;
    }
    bools(
        &mut rg,
        &rows.iter().map(|r| r.is_valid).collect::<Vec<_>>(),
    )?;
    opt_strs(
        &mut rg,
        &rows.iter().map(|r| r.reason.clone()).collect::<Vec<_>>(),
    )?;
    i64s(
        &mut rg,
        &rows
            .iter()
            .map(|r| r.updated_at.timestamp_millis())
            .collect::<Vec<_>>(),
    )?;
    rg.close()?;
    w.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::comparison::Thresholds;
    use crate::bitcoin::store::{self, ComparisonRow, PricePointRow};
    use chrono::{DateTime, TimeZone, Utc};
    use orrery_migration::MigratorTrait;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{Field, Row};
    use sea_orm::Database;

    fn rows(bytes: Vec<u8>) -> Vec<Row> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "orrery_parquet_test_{}_{n}.parquet",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let r = SerializedFileReader::new(file).unwrap();
        let _ = std::fs::remove_file(&path);
        r.get_row_iter(None).unwrap().map(|r| r.unwrap()).collect()
    }

    fn get<'a>(row: &'a Row, name: &str) -> &'a Field {
        row.get_column_iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, f)| f)
            .unwrap_or_else(|| panic!("no column {name}"))
    }

    fn time(f: &Field) -> DateTime<Utc> {
        match f {
            Field::TimestampMillis(ms) => Utc.timestamp_millis_opt(*ms).unwrap(),
            other => panic!("not a timestamp: {other:?}"),
        }
    }

    fn opt_f64(f: &Field) -> Option<f64> {
        match f {
            Field::Null => None,
            Field::Double(d) => Some(*d),
            other => panic!("not a double: {other:?}"),
        }
    }

    fn opt_str(f: &Field) -> Option<String> {
        match f {
            Field::Null => None,
            Field::Str(s) => Some(s.clone()),
            other => panic!("not a string: {other:?}"),
        }
    }

    #[tokio::test]
    async fn parquet_round_trips_the_stored_rows() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        orrery_migration::Migrator::up(&db, None).await.unwrap();
        let base = 1_735_689_600i64;
        for i in 0..7i64 {
            let at = Utc.timestamp_opt(base + i * 3600, 0).unwrap();
            store::upsert_point(
                &db,
                &PricePointRow {
                    pair: "BTC/USD".into(),
                    source: if i % 2 == 0 { "UTXORACLE" } else { "EXCHANGE" }.into(),
                    at,
                    price: 90_000.5 + i as f64,
                    confidence: (i % 3 != 0).then_some(0.25 * i as f64),
                    volume: (i % 2 == 0).then_some(1000.0 + i as f64),
                    details: (i != 4).then(|| serde_json::json!({"i": i, "note": "a, \"b\""})),
                },
            )
            .await
            .unwrap();
            store::upsert_comparison(
                &db,
                &ComparisonRow {
                    at,
                    oracle: (i != 2).then_some((90_000.0 + i as f64, 0.8)),
                    oracle_error: (i == 2).then(|| "too few".to_string()),
                    exchange_price: (i % 3 != 0).then_some(90_100.0),
                },
                &Thresholds::default(),
            )
            .await
            .unwrap();
        }
        let points = store::points_in(&db, None, None).await.unwrap();
        let mut buf = Vec::new();
        write_points(&points, &mut buf).unwrap();
        let back = rows(buf);
        assert_eq!(back.len(), points.len());
        for (p, r) in points.iter().zip(&back) {
            assert_eq!(get(r, "id"), &Field::Long(p.id));
            assert_eq!(opt_str(get(r, "pair")).as_deref(), Some(p.pair.as_str()));
            assert_eq!(
                opt_str(get(r, "source")).as_deref(),
                Some(p.source.as_str())
            );
            assert_eq!(time(get(r, "at")), p.at);
            assert_eq!(get(r, "price"), &Field::Double(p.price));
            assert_eq!(opt_f64(get(r, "confidence")), p.confidence);
            assert_eq!(opt_f64(get(r, "volume")), p.volume);
            let details = opt_str(get(r, "details"))
                .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap());
            assert_eq!(details, p.details);
        }
        assert!(back.iter().any(|r| get(r, "volume") == &Field::Null));

        let comparisons = store::comparisons_in(&db, None, None).await.unwrap();
        let mut buf = Vec::new();
        write_comparisons(&comparisons, &mut buf).unwrap();
        let back = rows(buf);
        assert_eq!(back.len(), comparisons.len());
        for (c, r) in comparisons.iter().zip(&back) {
            assert_eq!(get(r, "id"), &Field::Long(c.id));
            assert_eq!(time(get(r, "at")), c.at);
            assert_eq!(opt_str(get(r, "pair")).as_deref(), Some(c.pair.as_str()));
            assert_eq!(opt_f64(get(r, "utxoracle_price")), c.utxoracle_price);
            assert_eq!(opt_f64(get(r, "exchange_price")), c.exchange_price);
            assert_eq!(opt_f64(get(r, "diff")), c.diff);
            assert_eq!(opt_f64(get(r, "diff_percent")), c.diff_percent);
            assert_eq!(opt_f64(get(r, "confidence")), c.confidence);
            assert_eq!(get(r, "is_valid"), &Field::Bool(c.is_valid));
            assert_eq!(opt_str(get(r, "reason")), c.reason);
            assert_eq!(
                time(get(r, "updated_at")).timestamp_millis(),
                c.updated_at.timestamp_millis()
            );
        }
        assert!(comparisons.iter().any(|c| !c.is_valid));
    }

    #[test]
    fn an_empty_export_is_a_valid_file() {
        let mut buf = Vec::new();
        write_points(&[], &mut buf).unwrap();
        assert!(rows(buf).is_empty());
    }
}
