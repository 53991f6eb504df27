//! Parallel, ordered, bounded reading of consecutive data-lake objects: up to
//! `concurrency` objects are fetched and decompressed/decoded at once (decoding on the
//! blocking pool), and handed over strictly in ledger order through a channel of
//! `concurrency` slots, so at most `2 × concurrency` objects are held in memory whatever
//! the backlog. The first failure (a missing or corrupt object) is handed over in its
//! place and ends the reading: nothing after it is delivered, so nothing is skipped.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::layout::Schema;
use super::object::{decode_object, DecodedObject, ObjectError};
use super::store::{LakeStore, StoreError};

/// Why the reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The object does not exist (yet).
    #[error("{key}: no such object in the data lake")]
    Missing {
        /// Object key.
        key: String,
        /// First ledger it would hold.
        start: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object is corrupt.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The decoding task failed.
    #[error("{key}: decoding task failed: {error}")]
    Task {
        /// Object key.
        key: String,
        /// Why.
        error: String,
    },
}

/// A running reader; dropping it stops the reading.
pub struct Pipeline {
    rx: mpsc::Receiver<Result<DecodedObject, ReadError>>,
    task: JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fetches and decodes object `start` (ledgers `start..=schema.batch_end(start)`); with
/// `network`, its transactions too (see [`decode_object`]).
pub async fn read_object(
    store: &LakeStore,
    schema: &Schema,
    start: u32,
    network: Option<[u8; 32]>,
) -> Result<DecodedObject, ReadError> {
    let key = schema.object_key(start);
    let end = schema.batch_end(start);
    let Some(bytes) = store.get(&key).await? else {
        return Err(ReadError::Missing { key, start });
    };
    let full_key = format!("{}/{key}", store.url());
    let k = full_key.clone();
    tokio::task::spawn_blocking(move || decode_object(&k, &bytes, start, end, network))
        .await
        .map_err(|e| ReadError::Task {
            key: full_key,
            error: e.to_string(),
        })?
        .map_err(ReadError::from)
}

impl Pipeline {
    /// Starts reading the objects holding ledgers `from..=to` (`to = None`: until one is
    /// missing), `concurrency` at a time; with `network`, transactions are kept too.
    pub fn start(
        store: Arc<LakeStore>,
        schema: Schema,
        from: u32,
        to: Option<u32>,
        concurrency: usize,
        network: Option<[u8; 32]>,
    ) -> Self {
        let concurrency = concurrency.max(1);
        let (tx, rx) = mpsc::channel(concurrency);
        let per = schema.ledgers_per_batch;
        let first = schema.batch_start(from);
        let task = tokio::spawn(async move {
            let starts = std::iter::successors(Some(first), move |s| s.checked_add(per))
                .take_while(move |s| to.is_none_or(|t| *s <= t));
            let schema = &schema;
            let store = &store;
            let mut objects = futures::stream::iter(starts)
                .map(|s| read_object(store, schema, s, network))
                .buffered(concurrency);
            while let Some(r) = objects.next().await {
                let stop = r.is_err();
                if tx.send(r).await.is_err() || stop {
                    return;
                }
            }
        });
        Self { rx, task }
    }

    /// The next object in order; `None` once the range is read (or after a failure).
    pub async fn next(&mut self) -> Option<Result<DecodedObject, ReadError>> {
        self.rx.recv().await
    }

    /// The next object if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<DecodedObject, ReadError>> {
        self.rx.try_recv().ok()
    }
}
