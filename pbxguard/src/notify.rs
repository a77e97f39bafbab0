//! systemd's readiness protocol (`sd_notify`): `Type=notify` units learn that pbxguard is
//! ready only once the program is attached and the bans are restored, and `WatchdogSec=`
//! restarts a daemon that stopped answering. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! The `sd-notify` crate supplies the protocol: the typed states ([`NotifyState`]: `READY=1`,
//! `STATUS=`, `WATCHDOG=1`, `RELOADING=1` with `MONOTONIC_USEC=`, `STOPPING=1`), the
//! watchdog interval (`WATCHDOG_USEC`, honouring `WATCHDOG_PID`, with
//! [`sd_notify::watchdog_enabled`]) and the datagram to a socket file ([`sd_notify::notify`],
//! what systemd sets). Only an abstract socket (`@name`, which sd_notify(3) allows and some
//! service managers use) is reached here, because `sd_notify::notify` (0.5) takes `@name`
//! for a file name. `NOTIFY_SOCKET` is checked once, as libsystemd does: an absolute path or
//! `@name`, anything else is refused with a warning rather than sent to a file relative to
//! the working directory.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

/// The states [`Notifier::send`] takes, re-exported so that callers need not name the crate.
pub use sd_notify::NotifyState;

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file (`/run/systemd/notify`), which `sd_notify::notify` reads from the
    /// environment itself.
    Path,
    /// A Linux abstract socket (`@name`).
    Abstract(Vec<u8>),
}

impl Target {
    /// Reads a `NOTIFY_SOCKET` value; `None` (and a warning) for one libsystemd refuses too.
    fn parse(value: &str) -> Option<Target> {
        if let Some(name) = value.strip_prefix('@')
            && !name.is_empty()
        {
            Some(Target::Abstract(name.as_bytes().to_vec()))
        } else if value.starts_with('/') {
            Some(Target::Path)
        } else {
            tracing::warn!(
                socket = value,
                "NOTIFY_SOCKET is neither an absolute path nor @name; systemd notifications are off"
            );
            None
        }
    }
}

/// Where to send notifications, from the environment systemd sets.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<Target>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| Target::parse(&s));
        Notifier {
            socket,
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to send `WATCHDOG=1`: half the configured timeout, as systemd advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends the states in one datagram (`READY=1\nSTATUS=...\n`); failures are logged,
    /// never fatal.
    pub fn send(&self, states: &[NotifyState<'_>]) {
        let Some(target) = &self.socket else { return };
        let result = match target {
            Target::Path => sd_notify::notify(states),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let message: String = states.iter().map(|s| format!("{s}\n")).collect();
                UnixDatagram::unbound()
                    .and_then(|sock| {
                        sock.send_to_addr(
                            message.as_bytes(),
                            &SocketAddr::from_abstract_name(name)?,
                        )
                    })
                    .map(drop)
            }
        };
        if let Err(e) = result {
            tracing::warn!(socket = ?target, error = %e, "systemd notification failed");
        }
    }
}

/// `RELOADING=1` and the `MONOTONIC_USEC=` systemd (v253+) wants with it; `None` if the
/// clock cannot be read, when it is better to say nothing than to fail the reload.
pub fn reloading() -> Option<[NotifyState<'static>; 2]> {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => Some([NotifyState::Reloading, now]),
        Err(e) => {
            tracing::warn!(error = %e, "no monotonic clock; reload not announced to systemd");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// An abstract socket, the one target sent to here (a socket file goes through
    /// `sd_notify::notify`, which reads `NOTIFY_SOCKET` itself: tests/operate.rs checks it
    /// with the real daemon).
    fn abstract_socket(test: &str) -> (UnixDatagram, Notifier) {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("pbxguard-notify-{test}-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier {
            socket: Target::parse(&format!("@{name}")),
            watchdog: None,
        };
        (socket, notifier)
    }

    #[test]
    fn states_arrive_in_one_datagram_one_per_line() {
        let (socket, notifier) = abstract_socket("states");
        notifier.send(&[
            NotifyState::Ready,
            NotifyState::Status("enforcing with xdp"),
        ]);
        assert_eq!(receive(&socket), "READY=1\nSTATUS=enforcing with xdp\n");
        notifier.send(&[NotifyState::Watchdog]);
        assert_eq!(receive(&socket), "WATCHDOG=1\n");
        notifier.send(&reloading().unwrap());
        let reload = receive(&socket);
        let usec = reload
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("{reload}"));
        assert!(usec.parse::<u64>().unwrap() > 0, "{reload}");
        notifier.send(&[NotifyState::Stopping]);
        assert_eq!(receive(&socket), "STOPPING=1\n");
    }

    #[test]
    fn only_absolute_paths_and_abstract_names_are_accepted() {
        assert_eq!(Target::parse("/run/systemd/notify"), Some(Target::Path));
        assert_eq!(Target::parse("@sd"), Some(Target::Abstract(b"sd".to_vec())));
        for refused in ["notify.sock", "./notify.sock", "@", "vsock:2:1234"] {
            assert_eq!(Target::parse(refused), None, "{refused}");
        }
        // Without a socket nothing is sent and nothing fails.
        Notifier::default().send(&[NotifyState::Ready]);
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout() {
        let notifier = Notifier {
            socket: None,
            watchdog: Some(Duration::from_millis(400)),
        };
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(200))
        );
        assert_eq!(Notifier::default().watchdog_interval(), None);
    }
}
