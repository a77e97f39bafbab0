//! Downloads a feed (HTTP(S), conditional GET) or reads it from a local file, bounded in
//! time and size. A download that is cut short, too large or answered with an error is an
//! error, never a shorter list: the caller keeps the last good content.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::FeedError;

/// Sent with every request, so feed operators can tell who is downloading.
const USER_AGENT: &str = concat!("pbxguard/", env!("CARGO_PKG_VERSION"));

/// The longest validator sent back; a longer one (from a damaged state file) is dropped.
const VALIDATOR_MAX: usize = 1024;

/// Validators from the last good download, sent back so an unchanged feed costs a 304.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The `ETag` the server sent (sent back as `If-None-Match`).
    pub etag: Option<String>,
    /// The `Last-Modified` the server sent (sent back as `If-Modified-Since`).
    pub last_modified: Option<String>,
}

/// The outcome of a successful request.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the content in force is still current.
    NotModified,
    /// A complete body (never a cut-short one) and the validators for the next request.
    Fresh {
        /// The whole body, at most `max_bytes`.
        body: Vec<u8>,
        /// What the server sent to make the next request conditional.
        validators: Validators,
    },
}

/// GETs `url` with If-None-Match / If-Modified-Since from `validators`, all of it (connect,
/// redirects, headers, body) within `timeout`. Reads at most `max_bytes`: a larger
/// Content-Length or body is `TooLarge` without reading the rest. A body shorter than its
/// Content-Length is `Truncated`; a chunked body must end with its last chunk. 304 is
/// `NotModified` (only when a validator was sent); other non-2xx are `Status`, except 400
/// with `accept_400` (APIBAN answers "no new bans" with 400), which comes back as `Fresh`.
pub fn fetch_url(
    url: &str,
    validators: &Validators,
    timeout: Duration,
    max_bytes: u64,
    accept_400: bool,
) -> Result<Fetched, FeedError> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build();
    let mut request = agent.get(url);
    let etag = validators.etag.as_deref().filter(|v| header_safe(v));
    let last_modified = validators
        .last_modified
        .as_deref()
        .filter(|v| header_safe(v));
    if let Some(etag) = etag {
        request = request.set("If-None-Match", etag);
    }
    if let Some(last_modified) = last_modified {
        request = request.set("If-Modified-Since", last_modified);
    }
    let status_error = |status: u16| FeedError::Status {
        url: url.to_string(),
        status,
    };
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(400, response)) if accept_400 => response,
        Err(ureq::Error::Status(status, _)) => return Err(status_error(status)),
        Err(ureq::Error::Transport(transport)) => {
            return Err(FeedError::Transport {
                url: url.to_string(),
                message: transport.to_string(),
            });
        }
    };
    let status = response.status();
    match status {
        304 if etag.is_some() || last_modified.is_some() => {
            tracing::debug!(url, "feed not modified");
            return Ok(Fetched::NotModified);
        }
        200..=299 => {}
        400 if accept_400 => {}
        _ => return Err(status_error(status)),
    }
    let header = |name: &str| response.header(name).map(str::to_string);
    let validators = Validators {
        etag: header("ETag"),
        last_modified: header("Last-Modified"),
    };
    // ureq drops Content-Length when it decompresses, and ignores it for chunked bodies.
    let chunked = response.header("Transfer-Encoding").is_some();
    let expected = match chunked {
        true => None,
        false => response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok()),
    };
    if let Some(expected) = expected.filter(|&len| len > max_bytes) {
        tracing::debug!(url, expected, max_bytes, "feed too large");
        return Err(too_large(url, max_bytes));
    }
    let capacity = expected.unwrap_or(0).min(max_bytes).min(1 << 20);
    let mut body = Vec::with_capacity(capacity as usize);
    let read = response
        .into_reader()
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut body);
    let got = body.len() as u64;
    if let Err(e) = read {
        return Err(read_error(url, e, got, expected, chunked));
    }
    if got > max_bytes {
        return Err(too_large(url, max_bytes));
    }
    if let Some(expected) = expected.filter(|&len| got < len) {
        return Err(FeedError::Truncated {
            url: url.to_string(),
            got,
            expected,
        });
    }
    tracing::debug!(url, status, bytes = got, "feed downloaded");
    Ok(Fetched::Fresh { body, validators })
}

/// Reads a local feed file: at most `max_bytes` (more is `TooLarge`), regular files only (a
/// FIFO or device would block or never end; it is opened non-blocking and refused).
pub fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FeedError> {
    let file_error = |message: String| FeedError::File {
        path: path.display().to_string(),
        message,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| file_error(e.to_string()))?;
    let meta = file.metadata().map_err(|e| file_error(e.to_string()))?;
    if !meta.is_file() {
        return Err(file_error("not a regular file".into()));
    }
    let too_large = || FeedError::TooLarge {
        what: path.display().to_string(),
        limit: max_bytes,
    };
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| file_error(e.to_string()))?;
    // The file may have grown since the metadata was read.
    if body.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(body)
}

fn too_large(url: &str, limit: u64) -> FeedError {
    FeedError::TooLarge {
        what: url.to_string(),
        limit,
    }
}

/// Names a failed body read: cut short when the length was known and the connection
/// ended; a broken or cut-short chunked body; otherwise the error as it came.
fn read_error(
    url: &str,
    e: std::io::Error,
    got: u64,
    expected: Option<u64>,
    chunked: bool,
) -> FeedError {
    let closed = matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    );
    if let (Some(expected), true) = (expected, closed) {
        return FeedError::Truncated {
            url: url.to_string(),
            got,
            expected,
        };
    }
    let message = match chunked {
        true => format!("the chunked body is broken or was cut short after {got} bytes ({e})"),
        false => format!("reading the body failed after {got} bytes ({e})"),
    };
    FeedError::Transport {
        url: url.to_string(),
        message,
    }
}

/// Whether a stored validator can go into a header as it is (printable ASCII, bounded):
/// a damaged state file must cost one full download, not a request that always fails.
fn header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= VALIDATOR_MAX
        && value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        net::{IpAddr, SocketAddr, TcpListener},
        time::Instant,
    };

    use pbxguard_lab::{
        Lab, PBX,
        http::{HttpServer, Reply},
    };

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Runs `fetch_url` from inside the lab's PBX namespace, where the server listens.
    fn fetch(
        lab: &Lab,
        url: String,
        validators: Validators,
        timeout: Duration,
        max_bytes: u64,
        accept_400: bool,
    ) -> Result<Fetched, FeedError> {
        lab.inside
            .enter(move || fetch_url(&url, &validators, timeout, max_bytes, accept_400))
    }

    fn serve() -> (Lab, HttpServer) {
        let lab = Lab::new();
        let server = HttpServer::start(&lab.inside, IpAddr::V4(PBX));
        (lab, server)
    }

    const SECS: Duration = Duration::from_secs(10);

    #[test]
    fn etag_then_not_modified() {
        let (lab, server) = serve();
        let body = b"# list\n203.0.113.0/24\n".to_vec();
        server.set(
            "/drop.txt",
            Reply::Body {
                body: body.clone(),
                etag: Some("\"v1\"".into()),
            },
        );
        let url = server.url("/drop.txt");
        let first = fetch(&lab, url.clone(), Validators::default(), SECS, MIB, false);
        let validators = Validators {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        assert_eq!(
            first,
            Ok(Fetched::Fresh {
                body,
                validators: validators.clone()
            })
        );
        let second = fetch(&lab, url.clone(), validators, SECS, MIB, false);
        assert_eq!(second, Ok(Fetched::NotModified));
        // A new version: the old ETag no longer matches.
        server.set(
            "/drop.txt",
            Reply::Body {
                body: b"198.51.100.1\n".to_vec(),
                etag: Some("\"v2\"".into()),
            },
        );
        let stale = Validators {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        let third = fetch(&lab, url, stale, SECS, MIB, false);
        assert!(matches!(third, Ok(Fetched::Fresh { ref body, .. }) if body == b"198.51.100.1\n"));
        assert_eq!(
            server.requests(),
            [
                ("/drop.txt".to_string(), 200, None),
                ("/drop.txt".to_string(), 304, Some("\"v1\"".to_string())),
                ("/drop.txt".to_string(), 200, Some("\"v1\"".to_string())),
            ]
        );
    }

    #[test]
    fn unusable_validators_are_not_sent() {
        let (lab, server) = serve();
        server.set(
            "/a",
            Reply::Body {
                body: b"x".to_vec(),
                etag: None,
            },
        );
        let damaged = Validators {
            etag: Some("\"a\"\r\nX-Evil: 1".into()),
            last_modified: Some(String::new()),
        };
        let got = fetch(&lab, server.url("/a"), damaged, SECS, MIB, false);
        assert_eq!(
            got,
            Ok(Fetched::Fresh {
                body: b"x".to_vec(),
                validators: Validators::default()
            })
        );
        assert_eq!(server.requests(), [("/a".to_string(), 200, None)]);
    }

    #[test]
    fn cut_short_body_is_truncated() {
        let (lab, server) = serve();
        server.set(
            "/cut",
            Reply::Truncated {
                body: b"203.0.113.1\n".repeat(100),
                claimed: 5000,
            },
        );
        let got = fetch(
            &lab,
            server.url("/cut"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert_eq!(
            got,
            Err(FeedError::Truncated {
                url: server.url("/cut"),
                got: 1200,
                expected: 5000
            })
        );
        // Nothing at all after the headers.
        server.set(
            "/empty",
            Reply::Truncated {
                body: vec![],
                claimed: 10,
            },
        );
        let got = fetch(
            &lab,
            server.url("/empty"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(
                got,
                Err(FeedError::Truncated {
                    got: 0,
                    expected: 10,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn fifty_megabytes_against_sixteen_is_too_large_quickly() {
        let (lab, server) = serve();
        server.set(
            "/big",
            Reply::Big {
                size: 50 * 1000 * 1000,
            },
        );
        let started = Instant::now();
        let got = fetch(
            &lab,
            server.url("/big"),
            Validators::default(),
            SECS,
            16 * MIB,
            false,
        );
        assert_eq!(
            got,
            Err(FeedError::TooLarge {
                what: server.url("/big"),
                limit: 16 * MIB
            })
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // Exactly the limit is fine; one byte more is not.
        server.set("/exact", Reply::Big { size: 4096 });
        let got = fetch(
            &lab,
            server.url("/exact"),
            Validators::default(),
            SECS,
            4096,
            false,
        );
        assert!(matches!(got, Ok(Fetched::Fresh { ref body, .. }) if body.len() == 4096));
        let got = fetch(
            &lab,
            server.url("/exact"),
            Validators::default(),
            SECS,
            4095,
            false,
        );
        assert!(
            matches!(got, Err(FeedError::TooLarge { limit: 4095, .. })),
            "{got:?}"
        );
    }

    #[test]
    fn error_statuses() {
        let (lab, server) = serve();
        let got = fetch(
            &lab,
            server.url("/missing"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert_eq!(
            got,
            Err(FeedError::Status {
                url: server.url("/missing"),
                status: 404
            })
        );
        server.set("/boom", Reply::Status(503, b"busy".to_vec()));
        let got = fetch(
            &lab,
            server.url("/boom"),
            Validators::default(),
            SECS,
            MIB,
            true,
        );
        assert!(matches!(got, Err(FeedError::Status { status: 503, .. })));
        // A 304 nobody asked for is not "unchanged".
        server.set("/odd", Reply::Status(304, vec![]));
        let got = fetch(
            &lab,
            server.url("/odd"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(got, Err(FeedError::Status { status: 304, .. })),
            "{got:?}"
        );
    }

    #[test]
    fn apiban_400_only_when_accepted() {
        let (lab, server) = serve();
        let body = br#"{"ipaddress":["no new bans"],"ID":"none"}"#.to_vec();
        server.set("/api/k/banned/7", Reply::Status(400, body.clone()));
        let url = server.url("/api/k/banned/7");
        let got = fetch(&lab, url.clone(), Validators::default(), SECS, MIB, true);
        assert_eq!(
            got,
            Ok(Fetched::Fresh {
                body,
                validators: Validators::default()
            })
        );
        let got = fetch(&lab, url, Validators::default(), SECS, MIB, false);
        assert!(matches!(got, Err(FeedError::Status { status: 400, .. })));
    }

    fn chunked(chunks: &[&[u8]], end: bool) -> Vec<u8> {
        let mut out =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for chunk in chunks {
            write!(out, "{:x}\r\n", chunk.len()).unwrap();
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        if end {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        out
    }

    #[test]
    fn chunked_bodies() {
        let (lab, server) = serve();
        let a: &[u8] = b"203.0.113.1\n";
        let b: &[u8] = b"203.0.113.2\n";
        server.set("/whole", Reply::Raw(chunked(&[a, b], true)));
        let got = fetch(
            &lab,
            server.url("/whole"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(got, Ok(Fetched::Fresh { ref body, .. }) if body == b"203.0.113.1\n203.0.113.2\n"),
            "{got:?}"
        );
        // The connection closes where the next chunk's size should be.
        server.set("/cut", Reply::Raw(chunked(&[a, b], false)));
        let got = fetch(
            &lab,
            server.url("/cut"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(got, Err(FeedError::Transport { ref message, .. }) if message.contains("chunked")),
            "{got:?}"
        );
        // No length announced: the cap applies while reading.
        let block = vec![b'1'; 64 * 1024];
        server.set(
            "/long",
            Reply::Raw(chunked(&[&block, &block, &block], true)),
        );
        let got = fetch(
            &lab,
            server.url("/long"),
            Validators::default(),
            SECS,
            100_000,
            false,
        );
        assert!(
            matches!(got, Err(FeedError::TooLarge { limit: 100_000, .. })),
            "{got:?}"
        );
    }

    /// A gzip member holding `data` in one stored (uncompressed) deflate block.
    fn gzip_stored(data: &[u8]) -> Vec<u8> {
        let crc = !data.iter().fold(!0u32, |mut crc, &byte| {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
            crc
        });
        let len = u16::try_from(data.len()).unwrap();
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn chunked_cut_inside_a_chunk() {
        let (lab, server) = serve();
        let lines = b"203.0.113.1\n203.0.113.2\n203.0.113.3\n".repeat(20);
        let gz = gzip_stored(&lines);
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n";
        // Compressed (ureq asks for gzip): the gzip trailer proves the end, so a cut
        // anywhere is an error.
        let mut raw =
            format!("{head}Content-Encoding: gzip\r\n\r\n{:x}\r\n", gz.len()).into_bytes();
        raw.extend_from_slice(&gz);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        server.set("/gz", Reply::Raw(raw.clone()));
        let got = fetch(
            &lab,
            server.url("/gz"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(got, Ok(Fetched::Fresh { ref body, .. }) if *body == lines),
            "{got:?}"
        );
        raw.truncate(raw.len() - 7 - 100);
        server.set("/gz-cut", Reply::Raw(raw));
        let got = fetch(
            &lab,
            server.url("/gz-cut"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(matches!(got, Err(FeedError::Transport { .. })), "{got:?}");
        // Uncompressed, cut inside a chunk's data: ureq 2.12's chunk decoder takes the close
        // for the end of the body and returns the part that arrived. This checks that known
        // limitation; when ureq reports the cut, expect an error here instead.
        let mut raw = format!("{head}\r\n{:x}\r\n", lines.len()).into_bytes();
        raw.extend_from_slice(&lines[..lines.len() - 100]);
        server.set("/plain-cut", Reply::Raw(raw));
        let got = fetch(
            &lab,
            server.url("/plain-cut"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(
            matches!(got, Ok(Fetched::Fresh { ref body, .. }) if body.len() == lines.len() - 100),
            "{got:?}"
        );
    }

    #[test]
    fn close_delimited_body_is_read_to_the_end() {
        let (lab, server) = serve();
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n192.0.2.1\n".to_vec();
        server.set("/old", Reply::Raw(raw));
        let got = fetch(
            &lab,
            server.url("/old"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(matches!(got, Ok(Fetched::Fresh { ref body, .. }) if body == b"192.0.2.1\n"));
    }

    #[test]
    fn refused_and_silent_servers_are_transport_errors() {
        let lab = Lab::new();
        // Bound and listening, but nobody ever answers: the total timeout ends the wait.
        let silent = lab
            .inside
            .enter(|| TcpListener::bind(SocketAddr::new(IpAddr::V4(PBX), 0)).unwrap());
        let url = format!("http://{}/list", silent.local_addr().unwrap());
        let started = Instant::now();
        let got = fetch(
            &lab,
            url,
            Validators::default(),
            Duration::from_millis(300),
            MIB,
            false,
        );
        assert!(matches!(got, Err(FeedError::Transport { .. })), "{got:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let port = silent.local_addr().unwrap().port();
        drop(silent);
        let got = fetch(
            &lab,
            format!("http://{PBX}:{port}/list"),
            Validators::default(),
            SECS,
            MIB,
            false,
        );
        assert!(matches!(got, Err(FeedError::Transport { .. })), "{got:?}");
    }

    #[test]
    fn local_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, b"192.0.2.1\n192.0.2.2\n").unwrap();
        assert_eq!(read_file(&path, 20), Ok(b"192.0.2.1\n192.0.2.2\n".to_vec()));
        assert!(matches!(
            read_file(&path, 19),
            Err(FeedError::TooLarge { limit: 19, .. })
        ));
        assert!(matches!(
            read_file(&dir.path().join("missing"), 20),
            Err(FeedError::File { .. })
        ));
        let not_regular = read_file(dir.path(), 20);
        assert!(
            matches!(not_regular, Err(FeedError::File { ref message, .. }) if message == "not a regular file"),
            "{not_regular:?}"
        );
        // A FIFO with no writer would block a plain open forever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        assert!(matches!(read_file(&fifo, 20), Err(FeedError::File { .. })));
    }
}
