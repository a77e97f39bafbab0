//! The control socket: one JSON request line in, one JSON response line out.
//!
//! A Unix socket (mode 0600, so only root can ban or unban) is the whole API of the
//! running daemon; the CLI is a thin client of it, and scripts may speak it directly.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::Semaphore,
};

use crate::{
    engine::{BanRequest, actor::Command, actor::EngineHandle},
    units::{BanDuration, parse_net},
};

/// Longest request line accepted: room for a bulk `bans add --from-file` of a few hundred
/// thousand networks; the socket is root-only.
const MAX_REQUEST: u64 = 32 * 1024 * 1024;

/// How the socket treats its clients: a client that connects and sends nothing (or stops
/// reading the answer) must not hold a connection for ever, and a flood of connections must
/// not take all descriptors from the engine and the log followers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send the whole request line.
    pub read_timeout: Duration,
    /// Time to take the whole answer (a `bans list` of a million bans is a few hundred MB).
    pub write_timeout: Duration,
    /// Connections served at once; one more is answered with an error and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(60),
            max_connections: 64,
        }
    }
}

/// Longest pause between two failed accepts.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Accepts the next connection. After a failure (EMFILE, ENFILE, ENOBUFS: the listener
/// stays readable, so an immediate retry fails again) it waits, 10 ms doubling to 1 s while
/// failures last: a persistent error costs a log line a second, not a spinning core.
pub(crate) async fn accept_with_backoff<T, F, Fut>(what: &str, mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut pause = Duration::from_millis(10);
    loop {
        match accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?pause, "{what}: accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
            }
        }
    }
}

/// What the CLI asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// `pbxguard status`
    Status,
    /// `pbxguard fraud status`
    FraudStatus,
    /// `pbxguard bans list`
    ListBans,
    /// `pbxguard bans add`
    AddBan {
        /// Address or CIDR.
        net: String,
        /// More addresses or CIDRs banned in the same step (one journal write).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<String>,
        /// Duration text (`10m`, `permanent`); default from config.
        duration: Option<String>,
        /// Free text.
        reason: Option<String>,
    },
    /// `pbxguard bans del`
    DelBan {
        /// Address or CIDR.
        net: String,
    },
    /// `pbxguard stats`
    Stats,
    /// `pbxguard explain IP`
    Explain {
        /// The address.
        ip: String,
    },
    /// `pbxguard reload`
    Reload,
}

/// The daemon's answer: `data` on success, `error` (one line, for the admin) on failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Result payload.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// What went wrong and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(data: Value) -> Response {
        Response {
            ok: true,
            data,
            error: None,
        }
    }

    fn err(message: impl ToString) -> Response {
        Response {
            ok: false,
            data: Value::Null,
            error: Some(message.to_string()),
        }
    }
}

/// Carries out one request: reads from the published snapshot (never waiting on the
/// engine loop), changes through the loop's command channel.
pub async fn handle(engine: &EngineHandle, request: Request) -> Response {
    let answer = |result: Result<Value, String>| match result {
        Ok(data) => Response::ok(data),
        Err(e) => Response::err(e),
    };
    match request {
        Request::Status => Response::ok(json!(engine.snapshot().status())),
        Request::FraudStatus => match engine.snapshot().fraud.clone() {
            Some(report) => Response::ok(json!(*report)),
            None => Response::err(
                "no toll-fraud rules run: add [fraud] (home_country) and a [[cdr]] source, then restart pbxguard",
            ),
        },
        Request::ListBans => Response::ok(json!(*engine.snapshot().bans)),
        Request::Reload => answer(
            engine
                .ask(Command::Reload)
                .await
                .map(|()| json!({"reloaded": true})),
        ),
        Request::Stats => {
            let counters = engine.counters();
            answer(
                tokio::task::spawn_blocking(move || counters.read())
                    .await
                    .map_err(|e| format!("internal error: {e}"))
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|stats| json!(stats)),
            )
        }
        Request::AddBan {
            net,
            more,
            duration,
            reason,
        } => {
            let duration = match duration.map(|d| d.parse::<BanDuration>()).transpose() {
                Ok(d) => d,
                Err(e) => return Response::err(e),
            };
            let mut requests = Vec::with_capacity(1 + more.len());
            for text in std::iter::once(&net).chain(&more) {
                match parse_net(text) {
                    Ok(net) => requests.push(BanRequest {
                        net,
                        duration,
                        reason: reason.clone(),
                        source: "manual".into(),
                    }),
                    Err(e) => return Response::err(e),
                }
            }
            let single = more.is_empty();
            answer(
                engine
                    .ask(|reply| Command::Ban(requests, reply))
                    .await
                    .map(|mut records| {
                        if single {
                            json!(records.pop())
                        } else {
                            json!(records)
                        }
                    }),
            )
        }
        Request::Explain { ip } => match ip.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => answer(
                engine
                    .ask(|reply| Command::Explain(ip, reply))
                    .await
                    .map(|e| json!(e)),
            ),
            Err(_) => Response::err(format!("`{ip}` is not an IP address")),
        },
        Request::DelBan { net } => match parse_net(&net) {
            Ok(net) => answer(
                engine
                    .ask(|reply| Command::Unban(vec![net], reply))
                    .await
                    .map(|mut records| json!(records.pop())),
            ),
            Err(e) => Response::err(e),
        },
    }
}

/// Serves requests until the listener is dropped.
pub async fn serve(listener: UnixListener, engine: EngineHandle) {
    serve_with(listener, Limits::default(), move |request| {
        let engine = engine.clone();
        async move { handle(&engine, request).await }
    })
    .await
}

/// The connection handling of [`serve`], with the limits and the request handler given.
pub async fn serve_with<H, Fut>(listener: UnixListener, limits: Limits, handler: H)
where
    H: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, _) = accept_with_backoff("control socket", || listener.accept()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(
                stream,
                &format!(
                    "busy: {} control connections are open, the most served at once; retry in a moment",
                    limits.max_connections
                ),
            );
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
            let mut line = String::new();
            let response = match tokio::time::timeout(
                limits.read_timeout,
                reader.read_line(&mut line),
            )
            .await
            {
                Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => handler(request).await,
                    Err(e) => Response::err(format!("bad request: {e}")),
                },
                Ok(Err(e)) => Response::err(format!("bad request: {e}")),
                Err(_) => Response::err(format!(
                    "no request line within {} s; send one JSON object and a newline",
                    limits.read_timeout.as_secs_f64()
                )),
            };
            let _ =
                tokio::time::timeout(limits.write_timeout, write.write_all(&line_of(&response)))
                    .await;
        });
    }
}

/// One response as the line sent on the socket.
fn line_of(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).expect("responses serialize");
    out.push(b'\n');
    out
}

/// Answers a connection over the limit without waiting on it: the error goes into the
/// socket buffer, whatever request is already there is read off (closing on unread data
/// would make the client see a reset instead of the error), and the connection is closed.
fn refuse(stream: tokio::net::UnixStream, message: &str) {
    // Plain non-blocking calls: tokio's `try_*` report WouldBlock until the reactor has
    // seen the new socket.
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let _ = stream.write_all(&line_of(&Response::err(message)));
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(std::io::Read::read(&mut stream, &mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Failures of the CLI side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "pbxguard daemon is not running (no one listens on {path}); start it with `systemctl start pbxguard` or `pbxguard run`"
    )]
    NoDaemon {
        /// Socket path tried.
        path: String,
    },
    /// The socket exists but we may not use it.
    #[error("permission denied on {path}: the control socket is root-only, run as root (sudo)")]
    Permission {
        /// Socket path tried.
        path: String,
    },
    /// Talking to the daemon failed midway.
    #[error("control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The daemon refused or failed the request.
    #[error("{0}")]
    Daemon(String),
}

/// Sends one request and returns the response data.
pub fn request(socket: &Path, request: &Request) -> Result<Value, ClientError> {
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NoDaemon { path: path.clone() }
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Permission { path: path.clone() },
        _ => ClientError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    // A daemon refusing the connection (too many open) answers and closes before reading
    // everything: its answer is still there to read after a failed write.
    let written = stream.write_all(&line);
    let mut answer = String::new();
    match (written, BufReader::new(&stream).read_line(&mut answer)) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) | (Ok(()), Err(e)) => return Err(io(e)),
        (Ok(()), Ok(_)) => {}
    }
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::Daemon(format!("unreadable answer from the daemon: {e}")))?;
    if response.ok {
        Ok(response.data)
    } else {
        Err(ClientError::Daemon(
            response.error.unwrap_or_else(|| "request failed".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, path::PathBuf};

    use super::*;

    /// A socket in a temporary directory served by [`serve_with`]; the handler answers
    /// with the request it got, so only the connection handling is under test.
    async fn server(limits: Limits) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(serve_with(
            listener,
            limits,
            |request: Request| async move { Response::ok(json!(request)) },
        ));
        (dir, path)
    }

    /// A client that waits at most 30 s for an answer: far longer than any limit here.
    fn connect(path: &Path) -> UnixStream {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// The answer line, then whether the daemon closed the connection after it.
    fn answer(stream: &UnixStream) -> (Response, bool) {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .expect("an answer before the client's timeout");
        let response = serde_json::from_str(&line).unwrap();
        let mut rest = Vec::new();
        let closed = matches!(reader.read_to_end(&mut rest), Ok(0) | Err(_)) && rest.is_empty();
        (response, closed)
    }

    #[tokio::test]
    async fn a_silent_client_is_answered_and_dropped_after_the_read_timeout() {
        let (_dir, path) = server(Limits {
            read_timeout: Duration::from_millis(200),
            ..Limits::default()
        })
        .await;
        let (response, closed) = tokio::task::spawn_blocking(move || {
            // Half a request, then silence: without a read timeout this waits for ever.
            let mut silent = connect(&path);
            silent.write_all(b"{\"command\":").unwrap();
            answer(&silent)
        })
        .await
        .unwrap();
        assert!(!response.ok);
        let error = response.error.unwrap();
        assert!(error.contains("no request line within 0.2 s"), "{error}");
        assert!(closed);
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_slots_come_back() {
        let (_dir, path) = server(Limits {
            max_connections: 4,
            ..Limits::default()
        })
        .await;
        tokio::task::spawn_blocking(move || {
            // Four clients that say nothing hold every slot (accepts are served in order).
            let mut held: Vec<UnixStream> = (0..4).map(|_| connect(&path)).collect();
            // The fifth, as the CLI speaks: request written, answer read.
            for _ in 0..3 {
                let refused = request(&path, &Request::Status).unwrap_err();
                assert!(
                    refused
                        .to_string()
                        .contains("busy: 4 control connections are open"),
                    "{refused}"
                );
            }
            let raw = connect(&path);
            let (response, closed) = answer(&raw);
            assert!(!response.ok && closed, "{response:?}");
            // One held client leaves: its slot serves the next request.
            drop(held.pop());
            let served = (0..600).find_map(|_| match request(&path, &Request::Reload) {
                Ok(data) => Some(data),
                Err(ClientError::Daemon(e)) if e.contains("busy") => {
                    std::thread::sleep(Duration::from_millis(50));
                    None
                }
                Err(e) => panic!("{e}"),
            });
            assert_eq!(served, Some(json!({"command": "reload"})));
            drop(held);
        })
        .await
        .unwrap();
    }

    /// A real EMFILE: with no descriptor left, `accept` fails while the connection waits in
    /// the backlog, so the listener stays readable. Lowering the limit would break the other
    /// tests of this process, so the test runs itself in a child process.
    #[test]
    fn accept_failures_back_off_instead_of_spinning() {
        const NAME: &str = "control::tests::accept_failures_back_off_instead_of_spinning";
        if std::env::var_os("PBXGUARD_TEST_EMFILE").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("PBXGUARD_TEST_EMFILE", "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            let listener = UnixListener::bind(&path).unwrap();
            let _waiting = UnixStream::connect(&path).unwrap();
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: plain libc calls on a local struct.
            assert_eq!(
                unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
                0
            );
            let lowest_free = std::fs::File::open("/dev/null").map(|f| {
                use std::os::fd::AsRawFd as _;
                f.as_raw_fd()
            });
            let lowered = libc::rlimit {
                rlim_cur: lowest_free.unwrap() as libc::rlim_t,
                ..limit
            };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
            let attempts = std::cell::Cell::new(0u32);
            let accept = || {
                attempts.set(attempts.get() + 1);
                listener.accept()
            };
            let gave_up =
                tokio::time::timeout(Duration::from_secs(2), accept_with_backoff("test", accept))
                    .await;
            assert!(gave_up.is_err(), "accepted with no descriptor free");
            // 10 ms doubling: about 8 tries in 2 s; a spinning loop makes millions.
            let tries = attempts.get();
            assert!((2..=20).contains(&tries), "{tries} accepts in 2 s");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
            tokio::time::timeout(
                Duration::from_secs(30),
                accept_with_backoff("test", || listener.accept()),
            )
            .await
            .expect("accepted once descriptors are free");
        });
    }
}
