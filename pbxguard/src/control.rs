//! The control socket: one JSON request line in, one JSON response line out.
//!
//! A Unix socket (mode 0600, so only root can ban or unban) is the whole API of the
//! running daemon; the CLI is a thin client of it, and scripts may speak it directly.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
};

use crate::{
    engine::{BanRequest, actor::Command, actor::EngineHandle},
    units::{BanDuration, parse_net},
};

/// Longest request line accepted: room for a bulk `bans add --from-file` of a few hundred
/// thousand networks; the socket is root-only.
const MAX_REQUEST: u64 = 32 * 1024 * 1024;

/// What the CLI asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// `pbxguard status`
    Status,
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
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
            let mut line = String::new();
            let response = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => handle(&engine, request).await,
                    Err(e) => Response::err(format!("bad request: {e}")),
                },
                Err(e) => Response::err(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&response).expect("responses serialize");
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
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
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
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
