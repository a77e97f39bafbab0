//! A real CrowdSec Local API (Debian's `crowdsec` package) inside a test namespace, so the
//! bouncer tests talk to the real thing rather than to our idea of it. Everything it writes
//! (config, sqlite database, credentials, log) lives under a directory of the caller's; the
//! system's `/etc/crowdsec` and its service are never used. No hub, acquisition or Central
//! API: `crowdsec -no-cs -no-capi` runs only the LAPI, and decisions come from `cscli`.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::Netns;

/// The machine `cscli decisions add` logs in as.
const MACHINE: &str = "pbxguard-lab";

/// A running LAPI; killed on drop (the directory is left to the caller).
pub struct Lapi {
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    ns: PathBuf,
    ns_name: String,
    addr: Ipv4Addr,
    port: u16,
}

impl Lapi {
    /// Starts `crowdsec -c CFG -no-cs -no-capi` in namespace `ns`, listening on `addr:port`
    /// there, with a private `config.yaml` (sqlite under `dir`, no online API), registers a
    /// machine so `cscli decisions add` works, and waits (bounded) until the LAPI answers.
    /// Panics with the LAPI's log when it does not come up.
    pub fn start(ns: &Netns, dir: &Path, addr: Ipv4Addr, port: u16) -> Lapi {
        std::fs::create_dir_all(dir.join("data")).expect("crowdsec dir");
        let dir = dir.canonicalize().expect("crowdsec dir");
        let config = dir.join("config.yaml");
        let d = dir.display();
        let yaml = format!(
            "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: {d}
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: {d}/acquis.yaml
cscli:
  output: human
  color: no
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {addr}:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
      - {addr}
prometheus:
  enabled: false
"
        );
        std::fs::write(&config, yaml).expect("crowdsec config");
        std::fs::write(dir.join("simulation.yaml"), "simulation: off\n").expect("simulation");
        // Upstream's default profile: only alerts without decisions use it (cscli's come
        // with theirs), but the LAPI refuses to start without one.
        std::fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == \"Ip\"
decisions:
 - type: ban
   duration: 4h
on_success: break
",
        )
        .expect("profiles");
        let mut lapi = Lapi {
            child: None,
            log: dir.join("lapi.log"),
            dir,
            config,
            ns: ns.path(),
            ns_name: ns.name.clone(),
            addr,
            port,
        };
        lapi.launch();
        // Writes the machine into the database and its password into the credentials file;
        // `--force` so a directory reused from an earlier run works too.
        lapi.cscli(&["machines", "add", MACHINE, "--auto", "--force"]);
        lapi
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "the LAPI is already running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("crowdsec log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg("crowdsec")
            .arg("-c")
            .arg(&self.config)
            .args(["-no-cs", "-no-capi"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("crowdsec log"))
            .stderr(log)
            .spawn()
            .expect("nsenter crowdsec (apt install crowdsec; cargo xtask setup does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let target = SocketAddr::from((self.addr, self.port));
        loop {
            let up = crate::enter_path(self.ns.clone(), move || {
                TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok()
            });
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "crowdsec exited ({status}) in {}:\n{}",
                    self.ns_name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the CrowdSec LAPI did not listen on {target} in {} within 20 s:\n{}",
                self.ns_name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The base URL the bouncer is given: `http://ADDR:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}:{}/", self.addr, self.port)
    }

    /// The LAPI's output so far (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `cscli` with the private config inside the namespace (it talks to the LAPI over
    /// HTTP there) and returns its stdout; panics with its stderr on failure.
    pub fn cscli(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .arg("cscli")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter cscli (apt install crowdsec; cargo xtask setup does)");
        assert!(
            out.status.success(),
            "cscli {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a bouncer (`cscli bouncers add NAME -o raw`) and returns its API key.
    pub fn add_bouncer(&self, name: &str) -> String {
        let key = self.cscli(&["bouncers", "add", name, "-o", "raw"]);
        let key = key.trim().to_string();
        assert!(!key.is_empty(), "cscli bouncers add {name} printed no key");
        key
    }

    /// One raw `GET /v1/decisions/stream` from inside the namespace (plain HTTP/1.0, so the
    /// lab needs no HTTP client): the status code and body as the LAPI sent them.
    pub fn stream_raw(&self, api_key: &str, startup: bool) -> (u16, String) {
        let target = SocketAddr::from((self.addr, self.port));
        let request = format!(
            "GET /v1/decisions/stream?startup={startup} HTTP/1.0\r\nHost: {target}\r\nX-Api-Key: {api_key}\r\nUser-Agent: pbxguard-lab\r\n\r\n"
        );
        let answer = crate::enter_path(self.ns.clone(), move || {
            let mut stream =
                TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect LAPI");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            stream.write_all(request.as_bytes()).expect("send");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).expect("read answer");
            answer
        });
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (status, body.to_string())
    }

    /// Stops the LAPI (SIGTERM, then SIGKILL after 5 s). Decisions stay in the database.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // nsenter execs crowdsec without forking, so this pid is crowdsec's.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops and starts it again with the same config and database: decisions, machines
    /// and bouncers (with each bouncer's last pull) survive.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// Decisions of one list (`new` or `deleted`) as (scope, value, type).
    fn list(body: &str, key: &str) -> Vec<(String, String, String)> {
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        match &json[key] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|d| {
                    let s = |k: &str| d[k].as_str().unwrap_or_else(|| panic!("{k} in {d}"));
                    (s("scope").into(), s("value").into(), s("type").into())
                })
                .collect(),
            other => panic!("{key} is {other}"),
        }
    }

    fn has(body: &str, key: &str, value: &str) -> bool {
        list(body, key).iter().any(|(_, v, _)| v == value)
    }

    #[test]
    fn lapi_round_trip() {
        let lab = crate::Lab::new();
        let dir = std::env::temp_dir().join(format!(
            "pbxguard-lab-crowdsec-{}-{}",
            std::process::id(),
            crate::NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut lapi = Lapi::start(&lab.inside, &dir, Ipv4Addr::LOCALHOST, 8080);
        assert_eq!(lapi.url(), "http://127.0.0.1:8080/");
        let key = lapi.add_bouncer("pbxguard");

        let (status, body) = lapi.stream_raw("not-the-key", true);
        println!("bad key: {status} {body}");
        assert_eq!(status, 403);

        lapi.cscli(&["decisions", "add", "-i", "192.0.2.7", "-d", "1h"]);
        lapi.cscli(&["decisions", "add", "-r", "198.51.100.0/24"]);
        let (status, body) = lapi.stream_raw(&key, true);
        println!("startup: {body}");
        assert_eq!(status, 200);
        let new = list(&body, "new");
        assert!(
            new.contains(&("Ip".into(), "192.0.2.7".into(), "ban".into())),
            "{body}"
        );
        assert!(
            new.contains(&("Range".into(), "198.51.100.0/24".into(), "ban".into())),
            "{body}"
        );

        let (_, body) = lapi.stream_raw(&key, false);
        println!("nothing changed: {body}");
        assert!(list(&body, "new").is_empty(), "{body}");

        lapi.cscli(&["decisions", "delete", "-i", "192.0.2.7"]);
        let (_, body) = lapi.stream_raw(&key, false);
        println!("after delete: {body}");
        assert!(has(&body, "deleted", "192.0.2.7"), "{body}");
        assert!(list(&body, "new").is_empty(), "{body}");

        lapi.restart();
        let (_, body) = lapi.stream_raw(&key, false);
        println!("after restart, startup=false: {body}");
        assert!(
            !has(&body, "new", "198.51.100.0/24"),
            "the LAPI kept the last pull: {body}"
        );
        let (_, body) = lapi.stream_raw(&key, true);
        println!("after restart, startup=true: {body}");
        assert!(has(&body, "new", "198.51.100.0/24"), "{body}");
        assert!(!has(&body, "new", "192.0.2.7"), "{body}");

        lapi.stop();
        drop(lapi);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
