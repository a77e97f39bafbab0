//! Who is never banned, kept current while the daemon runs: the peers the PBX's own
//! configs name (from the `pbx-trust` thread) and the host's own addresses (from the
//! netlink watcher). Both reach the guard; the PBX peers also reach the kernel.

use std::sync::Arc;

use ipnet::IpNet;

use super::Engine;
use crate::guard::HostAddress;

impl Engine {
    /// Never bans the peers the PBX's own configs name (re-read when they change).
    /// Their packets pass every kernel rule but the SIP flood limit.
    pub fn set_pbx_trust(&mut self, found: crate::trust::Discovered) {
        let list: Vec<(IpNet, String)> = found
            .trusted
            .iter()
            .map(|t| {
                (
                    t.net,
                    format!(
                        "{}:{} {}",
                        t.entry.file.display(),
                        t.entry.line,
                        t.entry.origin
                    ),
                )
            })
            .collect();
        if list.len() != self.pbx_trusted.len() {
            tracing::info!(
                peers = list.len(),
                "peers trusted from the PBX configuration"
            );
        }
        let nets: Vec<IpNet> = list.iter().map(|(net, _)| *net).collect();
        if let Err(e) = self.ledger.enforcer_mut().set_pbx_trusted(&nets) {
            tracing::error!(error = %e, "loading the PBX-trusted peers into the kernel failed; they are still never banned");
        }
        self.guard.set_pbx_trusted(list);
        self.pbx_trusted = Arc::new(found.trusted);
        self.apply_feeds();
    }

    /// Protects the host's current addresses (after a netlink address change).
    pub fn set_host_addresses(&mut self, host: Vec<HostAddress>) {
        tracing::debug!(addresses = host.len(), "host addresses refreshed");
        self.guard.set_host_addresses(host);
        self.apply_feeds();
    }
}
