//! A tiny HTTP/1.1 server for feed tests: it listens inside a lab namespace, answers each
//! path with a configured [`Reply`] (including broken ones: cut-short bodies, huge bodies,
//! raw bytes) and records what it was asked. One request per connection, then it closes;
//! std only.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::Netns;

/// The longest request head read; a longer one is answered with 431.
const HEAD_MAX: usize = 64 * 1024;

/// How long a connection may take to send its request, or to accept our writes.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the accept loop looks at the stop flag when nobody connects.
const POLL: Duration = Duration::from_millis(5);

/// What the server answers for one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body and, if given, an `ETag`; 304 when `If-None-Match` equals the etag.
    Body {
        /// The content.
        body: Vec<u8>,
        /// The `ETag` sent with it (quotes included, e.g. `"\"v1\""`).
        etag: Option<String>,
    },
    /// This status and body (e.g. 404, 503, APIBAN's 400 "no new bans").
    Status(u16, Vec<u8>),
    /// 200 announcing `Content-Length: claimed`, then only `body` and a close: a download
    /// cut short.
    Truncated {
        /// What is actually sent.
        body: Vec<u8>,
        /// The length announced.
        claimed: usize,
    },
    /// 200 with `Content-Length: size` of `203.0.113.N\n` lines, streamed without holding it
    /// in memory; stops quietly when the client closes.
    Big {
        /// Bytes announced and sent.
        size: usize,
    },
    /// These bytes verbatim (status line, headers and body), then a close: for framing the
    /// other replies cannot produce (chunked, no length, broken chunks).
    Raw(Vec<u8>),
}

/// A request served: (path, status answered, `If-None-Match` sent).
type Logged = (String, u16, Option<String>);

/// A running server; stopped on drop.
pub struct HttpServer {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr:0` inside namespace `ns` (the listener is bound there and keeps that
    /// namespace) and serves it on a thread of its own; unknown paths get 404.
    pub fn start(ns: &Netns, addr: IpAddr) -> HttpServer {
        let listener = ns.enter(move || {
            TcpListener::bind(SocketAddr::new(addr, 0)).expect("bind the HTTP test server")
        });
        // Non-blocking accept: the loop sees the stop flag without anyone having to connect
        // (a wake-up connection would have to come from inside the namespace).
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, log, stop) = (routes.clone(), log.clone(), stop.clone());
            std::thread::Builder::new()
                .name("http-test-server".into())
                .spawn(move || accept_loop(listener, routes, log, stop))
                .expect("spawn the HTTP test server")
        };
        HttpServer {
            addr,
            routes,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://ADDR:PORT/path` (IPv6 in brackets); `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers `path` with `reply` from now on (replacing what it answered before).
    pub fn set(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Requests served so far, oldest first: (path, status answered, `If-None-Match` sent).
    pub fn requests(&self) -> Vec<(String, u16, Option<String>)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (routes, log) = (routes.clone(), log.clone());
                // One thread per connection: a slow `Big` download must not hold up others.
                std::thread::spawn(move || serve(stream, &routes, &log));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Serves one request on `stream`; any I/O error (the client went away) ends it quietly.
fn serve(mut stream: TcpStream, routes: &Mutex<HashMap<String, Reply>>, log: &Mutex<Vec<Logged>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        let _ = stream.write_all(&response(431, &[], &[]));
        return;
    };
    let (path, if_none_match) = parse_head(&head);
    let reply = routes.lock().unwrap().get(&path).cloned();
    let status = match &reply {
        None => 404,
        Some(Reply::Body { etag, .. }) if etag.is_some() && *etag == if_none_match => 304,
        Some(Reply::Body { .. } | Reply::Truncated { .. } | Reply::Big { .. }) => 200,
        Some(Reply::Status(status, _)) => *status,
        Some(Reply::Raw(raw)) => raw_status(raw),
    };
    log.lock()
        .unwrap()
        .push((path, status, if_none_match.clone()));
    let _ = match reply {
        None => stream.write_all(&response(404, &[], b"not found\n")),
        Some(Reply::Body { body, etag }) => {
            let etag: Vec<(&str, String)> =
                etag.into_iter().map(|e| ("ETag", e)).collect::<Vec<_>>();
            let body: &[u8] = if status == 304 { &[] } else { &body };
            stream.write_all(&response(status, &etag, body))
        }
        Some(Reply::Status(status, body)) => stream.write_all(&response(status, &[], &body)),
        Some(Reply::Truncated { body, claimed }) => {
            let mut out = head_only(200, &[("Content-Length", claimed.to_string())]);
            out.extend_from_slice(&body);
            stream.write_all(&out)
        }
        Some(Reply::Big { size }) => write_big(&mut stream, size),
        Some(Reply::Raw(raw)) => stream.write_all(&raw),
    };
    let _ = stream.flush();
    // Dropping the stream closes it: the client sees the end (or the cut) of the body.
}

/// Reads up to the blank line that ends the request head; `None` if it never comes.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_MAX {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// The path (without the query) and the `If-None-Match` value of a request head.
fn parse_head(head: &[u8]) -> (String, Option<String>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let if_none_match = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("if-none-match")
            .then(|| value.trim().to_string())
    });
    (path, if_none_match)
}

/// The status in a raw reply's status line (0 when it has none).
fn raw_status(raw: &[u8]) -> u16 {
    raw.split(|&b| b == b' ')
        .nth(1)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Status line and headers (plus `Connection: close`), up to the blank line.
fn head_only(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// A whole response with `Content-Length` (none for 304, which has no body).
fn response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut headers = headers.to_vec();
    if status != 304 {
        headers.push(("Content-Length", body.len().to_string()));
    }
    let mut out = head_only(status, &headers);
    out.extend_from_slice(body);
    out
}

/// 200 with `size` bytes of `203.0.113.N\n` lines, written a block at a time.
fn write_big(stream: &mut TcpStream, size: usize) -> std::io::Result<()> {
    stream.write_all(&head_only(200, &[("Content-Length", size.to_string())]))?;
    let block: Vec<u8> = (0..=255u8)
        .cycle()
        .take(5000)
        .flat_map(|n| format!("203.0.113.{n}\n").into_bytes())
        .collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        stream.write_all(&block[..n])?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Shutdown;

    use super::*;
    use crate::{Lab, PBX};

    /// Sends `request` from inside the lab's PBX namespace and returns the whole answer
    /// (or, with `limit`, at most that many bytes before closing).
    fn exchange(lab: &Lab, addr: SocketAddr, request: String, limit: Option<usize>) -> Vec<u8> {
        lab.inside.enter(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = Vec::new();
            match limit {
                None => {
                    stream.read_to_end(&mut answer).unwrap();
                }
                Some(limit) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    while answer.len() < limit {
                        let n = stream.read(&mut buf).unwrap();
                        assert!(n > 0, "closed early");
                        answer.extend_from_slice(&buf[..n]);
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            answer
        })
    }

    fn get(path: &str, if_none_match: Option<&str>) -> String {
        let extra = if_none_match
            .map(|e| format!("If-None-Match: {e}\r\n"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: pbx\r\n{extra}\r\n")
    }

    fn text(answer: &[u8]) -> String {
        String::from_utf8_lossy(answer).into_owned()
    }

    #[test]
    fn serves_etags_statuses_cuts_and_big_bodies() {
        let lab = Lab::new();
        let server = HttpServer::start(&lab.inside, IpAddr::V4(PBX));
        let addr = server.addr;
        assert_eq!(server.url("/x"), format!("http://{PBX}:{}/x", addr.port()));
        server.set(
            "/list",
            Reply::Body {
                body: b"192.0.2.1\n".to_vec(),
                etag: Some("\"v1\"".into()),
            },
        );
        let answer = text(&exchange(&lab, addr, get("/list?x=1", None), None));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("ETag: \"v1\"\r\n"), "{answer}");
        assert!(answer.contains("Content-Length: 10\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n192.0.2.1\n"), "{answer}");

        let answer = text(&exchange(&lab, addr, get("/list", Some("\"v1\"")), None));
        assert!(
            answer.starts_with("HTTP/1.1 304 Not Modified\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\n"), "{answer}");
        let answer = text(&exchange(&lab, addr, get("/list", Some("\"v0\"")), None));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

        let answer = text(&exchange(&lab, addr, get("/nothing", None), None));
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

        server.set("/apiban", Reply::Status(400, br#"{"ID":"none"}"#.to_vec()));
        let answer = text(&exchange(&lab, addr, get("/apiban", None), None));
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with(r#"{"ID":"none"}"#), "{answer}");

        server.set(
            "/cut",
            Reply::Truncated {
                body: b"0123456789".to_vec(),
                claimed: 1000,
            },
        );
        let answer = text(&exchange(&lab, addr, get("/cut", None), None));
        assert!(answer.contains("Content-Length: 1000\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n0123456789"), "{answer}");

        server.set(
            "/raw",
            Reply::Raw(b"HTTP/1.1 418 Teapot\r\n\r\nhi".to_vec()),
        );
        assert_eq!(
            exchange(&lab, addr, get("/raw", None), None),
            b"HTTP/1.1 418 Teapot\r\n\r\nhi"
        );

        // A small Big is complete and made of lines; a huge one is abandoned by the client
        // after 1 MB and the server carries on serving.
        server.set("/small", Reply::Big { size: 100 });
        let answer = exchange(&lab, addr, get("/small", None), None);
        let body = text(&answer).split_once("\r\n\r\n").unwrap().1.to_string();
        assert_eq!(body.len(), 100);
        assert!(body.starts_with("203.0.113.0\n203.0.113.1\n"), "{body}");
        server.set("/big", Reply::Big { size: 1 << 30 });
        let answer = exchange(&lab, addr, get("/big", None), Some(1 << 20));
        assert!(text(&answer[..200]).contains("Content-Length: 1073741824\r\n"));

        let answer = text(&exchange(&lab, addr, get("/list", None), None));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

        let paths = |log: Vec<(String, u16, Option<String>)>| {
            log.into_iter()
                .map(|(path, status, inm)| format!("{path} {status} {inm:?}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(server.requests()),
            [
                "/list 200 None",
                "/list 304 Some(\"\\\"v1\\\"\")",
                "/list 200 Some(\"\\\"v0\\\"\")",
                "/nothing 404 None",
                "/apiban 400 None",
                "/cut 200 None",
                "/raw 418 None",
                "/small 200 None",
                "/big 200 None",
                "/list 200 None",
            ]
        );
        drop(server);
        // Stopped: nothing listens any more.
        let refused = lab.inside.enter(move || TcpStream::connect(addr).is_err());
        assert!(refused);
    }

    #[test]
    fn heads_and_statuses_parse() {
        assert_eq!(
            parse_head(b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nif-none-match:  \"e\" \r\n\r\n"),
            ("/a/b".to_string(), Some("\"e\"".to_string()))
        );
        assert_eq!(parse_head(b"\r\n\r\n"), ("/".to_string(), None));
        assert_eq!(raw_status(b"HTTP/1.1 503 Busy\r\n"), 503);
        assert_eq!(raw_status(b"garbage"), 0);
    }
}
