//! pipestat's one error type, and the single place that maps it to an HTTP status.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The request or input is wrong; the message names the parameter or field.
    BadRequest(String),
    /// No token, or a token that is not known.
    Unauthorized(String),
    /// A known token without the scope the route needs.
    Forbidden(String),
    NotFound(String),
    /// The path exists but not for this method; carries the allowed methods.
    MethodNotAllowed(&'static str),
    PayloadTooLarge(u64),
    /// The request (its body) did not arrive in time.
    RequestTimeout(String),
    UnsupportedMediaType(String),
    /// Over quota; carries the seconds until the quota resets.
    TooManyRequests(u64),
    /// The disk holding the database is full: the write was refused and nothing of it stored;
    /// carries the seconds after which to retry (`Retry-After`).
    StorageFull(u64),
    /// pipestat cannot take writes until it restarts (an fsync of the WAL failed).
    Unavailable(String),
    /// A usage error on the command line (exit code 2).
    Usage(String),
    Db(rusqlite::Error),
    Io(std::io::Error),
    /// Anything else that is not the client's fault.
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadRequest(msg.into())
    }

    /// The HTTP status for this error. Every surface calls this one function.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::Usage(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::RequestTimeout(_) => 408,
            Error::PayloadTooLarge(_) => 413,
            Error::UnsupportedMediaType(_) => 415,
            Error::TooManyRequests(_) => 429,
            Error::StorageFull(_) | Error::Unavailable(_) => 503,
            Error::Db(_) | Error::Io(_) | Error::Internal(_) => 500,
        }
    }

    /// A short machine-readable code for pipestat's own error shape.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) | Error::Usage(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::RequestTimeout(_) => "request_timeout",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::TooManyRequests(_) => "too_many_requests",
            Error::StorageFull(_) => "storage_full",
            Error::Unavailable(_) => "unavailable",
            Error::Db(_) | Error::Io(_) | Error::Internal(_) => "internal",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(m)
            | Error::Unauthorized(m)
            | Error::Forbidden(m)
            | Error::NotFound(m)
            | Error::UnsupportedMediaType(m)
            | Error::RequestTimeout(m)
            | Error::Usage(m)
            | Error::Unavailable(m)
            | Error::Internal(m) => f.write_str(m),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed; allowed: {allow}"),
            Error::PayloadTooLarge(max) => write!(f, "request body is larger than {max} bytes"),
            Error::TooManyRequests(secs) => {
                write!(f, "request quota exceeded; retry in {secs} s")
            }
            Error::StorageFull(secs) => write!(
                f,
                "the disk holding the database is full: writes are refused, nothing of this one \
                 was stored; retry in {secs} s"
            ),
            Error::Db(e) => write!(f, "database error: {e}"),
            Error::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Db(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Seconds a client is told to wait (`Retry-After`) when a write was refused for lack of
/// space: the writer probes for space back every few seconds (src/store/writer.rs).
pub const STORAGE_FULL_RETRY_SECS: u64 = 10;

impl From<rusqlite::Error> for Error {
    /// SQLite's SQLITE_FULL (a write or commit found no space) becomes `StorageFull`; SQLite has
    /// rolled the statement back, so nothing of the write is stored.
    fn from(e: rusqlite::Error) -> Error {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Error::StorageFull(STORAGE_FULL_RETRY_SECS),
            _ => Error::Db(e),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}
