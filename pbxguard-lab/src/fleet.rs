//! Several PBXs and one NATS server (`[cluster]`): a `hub` namespace holds the server, and
//! every lab's PBX namespace reaches it over a veth of its own (`10.99.<n>.0/24`). The
//! labs' attack traffic stays on their own `pbx0` links; nothing touches the host's
//! namespace.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, Instant},
};

use crate::{Lab, Netns, ip};

/// Port the NATS server listens on inside the hub.
pub const NATS_PORT: u16 = 4222;

/// The namespace of the shared services.
pub struct Hub {
    /// The namespace.
    pub ns: Netns,
    next: AtomicU8,
}

impl Hub {
    /// Creates the hub namespace.
    #[allow(clippy::new_without_default)] // creating a namespace is not a default value
    pub fn new() -> Hub {
        let id = format!(
            "{}x{}",
            std::process::id(),
            crate::NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Hub {
            ns: Netns::create(format!("pbxg-{id}-hub")),
            next: AtomicU8::new(1),
        }
    }

    /// Links `lab`'s PBX namespace to the hub; returns the hub's address as the PBX sees it.
    pub fn connect(&self, lab: &Lab) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let hub_if = format!("lab{n}");
        ip(&[
            "link",
            "add",
            "name",
            &hub_if,
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "hub0",
            "netns",
            &lab.inside.name,
        ]);
        let hub_addr = Ipv4Addr::new(10, 99, n, 1);
        for (ns, dev, addr) in [
            (&self.ns, hub_if.as_str(), hub_addr),
            (&lab.inside, "hub0", Ipv4Addr::new(10, 99, n, 2)),
        ] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        hub_addr
    }
}

/// A real `nats-server` with JetStream on, inside the hub, storing under a directory of
/// the caller's (so a restart finds its streams and consumers again).
pub struct NatsServer {
    options: Vec<String>,
    child: Option<Child>,
    ns: PathBuf,
    ns_name: String,
    store: PathBuf,
    log: PathBuf,
}

impl NatsServer {
    /// Starts the server and waits (bounded) until it accepts connections.
    pub fn start(hub: &Hub, store: &Path) -> NatsServer {
        NatsServer::start_with(hub, store, &[])
    }

    /// Starts the server with more command-line options (`--user`, `--tls`, ...).
    pub fn start_with(hub: &Hub, store: &Path, options: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            options: options.iter().map(|o| o.to_string()).collect(),
            child: None,
            ns: hub.ns.path(),
            ns_name: hub.ns.name.clone(),
            store: store.to_path_buf(),
            log: store.with_extension("log"),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let ready_before = self.log_text().matches("Server is ready").count();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.display()))
            .args(["nats-server", "--jetstream", "--store_dir"])
            .arg(&self.store)
            .args(["--addr", "0.0.0.0", "--port", &NATS_PORT.to_string()])
            .args(&self.options)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("nats log"))
            .stderr(log)
            .spawn()
            .expect("nats-server (apt install nats-server; cargo xtask setup does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log_text().matches("Server is ready").count() == ready_before {
            assert!(
                Instant::now() < deadline,
                "nats-server not ready in {}:\n{}",
                self.ns_name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let ready = crate::enter_path(self.ns.clone(), || {
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, NATS_PORT)),
                Duration::from_secs(5),
            )
            .is_ok()
        });
        assert!(ready, "nats-server does not accept connections");
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server (SIGKILL): clients see the connection drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
