//! GraphQL errors with a machine-readable `extensions.code`, never a Rust panic message.

use async_graphql::{Error, ErrorExtensionValues, ErrorExtensions, ServerError};

/// The error codes clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No or invalid credentials.
    Unauthenticated,
    /// Valid credentials without the needed role.
    Forbidden,
    /// An argument is malformed or out of range.
    BadUserInput,
    /// The requested object does not exist.
    NotFound,
    /// Something failed on our side (details are logged, not returned).
    Internal,
}

impl Code {
    /// The string in `extensions.code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::NotFound => "NOT_FOUND",
            Code::Internal => "INTERNAL",
        }
    }
}

/// An error with `extensions.code` set.
pub fn coded(code: Code, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", code.as_str()))
}

/// A `BAD_USER_INPUT` error naming the argument.
pub fn bad_input(argument: &str, reason: impl std::fmt::Display) -> Error {
    coded(
        Code::BadUserInput,
        format!("argument `{argument}`: {reason}"),
    )
    .extend_with(|_, e| e.set("argument", argument))
}

/// A `NOT_FOUND` error.
pub fn not_found(what: impl std::fmt::Display) -> Error {
    coded(Code::NotFound, format!("{what} not found"))
}

/// Logs the real cause and returns a generic `INTERNAL` error.
pub fn internal(context: &str, err: impl std::fmt::Display) -> Error {
    tracing::error!(context, error = %err, "internal error in GraphQL resolver");
    coded(Code::Internal, format!("internal error while {context}"))
}

/// A request-level error (before or around execution) with `extensions.code` set.
pub fn coded_server_error(code: &str, message: impl Into<String>) -> ServerError {
    let mut err = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code);
    err.extensions = Some(ext);
    err
}
