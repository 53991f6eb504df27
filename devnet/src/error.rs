//! Errors of the devnet library.

/// What can go wrong starting or driving a devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A listener could not bind.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Address that failed.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An account, chain, block or asset does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A control request is invalid (bad amount, missing trustline, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}
