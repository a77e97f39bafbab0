//! Blocklist feeds (`[[blocklist]]`): fetched (`fetch.rs`), parsed (`parse.rs`) and
//! refreshed on their schedule (`watch.rs`); the engine screens them and swaps them into
//! their own maps (`engine/feeds.rs`).
pub mod fetch;
pub mod parse;
pub mod watch;

/// Why a feed could not be refreshed; its last good content stays in force.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    /// The server answered with an error status.
    #[error("HTTP {status} from {url}")]
    Status { url: String, status: u16 },
    /// Connection, TLS, timeout or read error.
    #[error("fetching {url}: {message}")]
    Transport { url: String, message: String },
    /// The body ended before its Content-Length (or chunked end).
    #[error(
        "download from {url} was cut short ({got} of {expected} bytes); keeping the last good content"
    )]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    /// Larger than the feed's `max_bytes`.
    #[error("{what} is larger than max_bytes = {limit}; raise it if the feed really is that big")]
    TooLarge { what: String, limit: u64 },
    /// A local file could not be read.
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
    /// The body is not in the feed's format.
    #[error("{0}")]
    Format(String),
}
