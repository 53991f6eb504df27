//! The object store a data lake lives in, through the `object_store` crate: a local
//! directory (`file:///dir`), HTTP(S) (`https://host/path`), S3 (`s3://bucket/path`,
//! anonymous by default) or GCS (`gs://bucket/path`).

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use super::layout::{Schema, SchemaError, CONFIG_KEY};

/// Why the store cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `stellar.datalake_url` is not a URL we can open.
    #[error("stellar.datalake_url {url:?}: {error}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        error: String,
    },
    /// Reading an object failed (network, permissions, I/O).
    #[error("{key}: {error}")]
    Read {
        /// Object key.
        key: String,
        /// Why.
        error: String,
    },
    /// The config object is missing.
    #[error("{key}: no SEP-54 config in the data lake")]
    NoConfig {
        /// Its key.
        key: String,
    },
    /// The config object is unusable.
    #[error(transparent)]
    Schema(#[from] SchemaError),
}

/// How to reach the store besides its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 region (`stellar.datalake_region`).
    pub region: Option<String>,
    /// Unsigned requests (public buckets; `stellar.datalake_anonymous`).
    pub anonymous: bool,
}

/// A data lake: its store and the ledgers path inside it.
#[derive(Debug, Clone)]
pub struct LakeStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl LakeStore {
    /// Opens the store at `url`.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let bad = |error: String| StoreError::Url {
            url: url.to_string(),
            error,
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let mut opts: Vec<(String, String)> = Vec::new();
        match parsed.scheme() {
            "file" | "https" => {}
            // object_store refuses plain HTTP unless told (a local devnet or mirror).
            "http" => opts.push(("allow_http".into(), "true".into())),
            "s3" | "s3a" => {
                if let Some(r) = &options.region {
                    opts.push(("aws_region".into(), r.clone()));
                }
                if options.anonymous {
                    opts.push(("aws_skip_signature".into(), "true".into()));
                }
            }
            "gs" => {
                if options.anonymous {
                    opts.push(("google_skip_signature".into(), "true".into()));
                }
            }
            other => {
                return Err(bad(format!(
                    "scheme {other:?}: expected file, http, https, s3 or gs"
                )))
            }
        }
        let (store, path) =
            object_store::parse_url_opts(&parsed, opts).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            store: Arc::from(store),
            prefix: path.to_string(),
            url: url.trim_end_matches('/').to_string(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// The object at `key` (relative to the ledgers path), `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        let read = |e: object_store::Error| StoreError::Read {
            key: format!("{}/{key}", self.url),
            error: e.to_string(),
        };
        match self.store.get(&self.path(key)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(read),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(read(e)),
        }
    }

    /// Reads the store's config (`.config.json`).
    pub async fn schema(&self) -> Result<Schema, StoreError> {
        let key = format!("{}/{CONFIG_KEY}", self.url);
        let bytes = self
            .get(CONFIG_KEY)
            .await?
            .ok_or_else(|| StoreError::NoConfig { key: key.clone() })?;
        Ok(Schema::parse(&key, &bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_directory_and_bad_urls() {
        let dir = std::env::temp_dir().join(format!("orrery-lake-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("FFFFFFFF--0-9")).unwrap();
        std::fs::write(
            dir.join(CONFIG_KEY),
            br#"{"networkPassphrase":"n","version":"1.0","compression":"zstd","ledgersPerBatch":1,"batchesPerPartition":10}"#,
        )
        .unwrap();
        std::fs::write(dir.join("FFFFFFFF--0-9/FFFFFFFD--2.xdr.zst"), b"x").unwrap();
        let url = Url::from_directory_path(&dir).unwrap();
        let store = LakeStore::open(url.as_str(), &StoreOptions::default()).unwrap();
        let s = store.schema().await.unwrap();
        assert_eq!(s.batches_per_partition, 10);
        assert_eq!(
            store.get(&s.object_key(2)).await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert!(store.get(&s.object_key(3)).await.unwrap().is_none());
        std::fs::remove_dir_all(&dir).ok();
        assert!(LakeStore::open("ftp://x/y", &StoreOptions::default()).is_err());
        assert!(LakeStore::open("not a url", &StoreOptions::default()).is_err());
        let empty = std::env::temp_dir().join(format!("orrery-lake-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let url = Url::from_directory_path(&empty).unwrap();
        let store = LakeStore::open(url.as_str(), &StoreOptions::default()).unwrap();
        assert!(matches!(
            store.schema().await,
            Err(StoreError::NoConfig { .. })
        ));
        std::fs::remove_dir_all(&empty).ok();
    }
}
