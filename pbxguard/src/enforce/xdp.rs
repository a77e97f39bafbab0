//! The XDP backend: attaches the program to the configured interfaces and keeps it there.
//!
//! Program, links and maps are pinned under the bpffs directory. A restarted daemon loads
//! the new program against the pinned maps and swaps it into the pinned links atomically
//! (`bpf_link_update`), so bans stay enforced through restarts, upgrades and crashes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    Counters, EnforceError, Enforcer, InterfaceStatus, bpffs,
    overlap::Expiry,
    program::{LoadOptions, XdpProgram},
};
use crate::config::{Config, XdpMode};
use aya::programs::{
    XdpMode as AyaMode,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};
use ipnet::IpNet;

/// How the program ended up attached to one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver.
    Native,
    /// In the generic (skb) path.
    Generic,
}

impl AttachMode {
    fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }

    fn from_name(name: &str) -> Option<AttachMode> {
        match name {
            "native" => Some(AttachMode::Native),
            "generic" => Some(AttachMode::Generic),
            _ => None,
        }
    }

    fn aya(self) -> AyaMode {
        match self {
            AttachMode::Native => AyaMode::Driver,
            AttachMode::Generic => AyaMode::Skb,
        }
    }

    fn satisfies(self, wanted: XdpMode) -> bool {
        match wanted {
            XdpMode::Auto => true,
            XdpMode::Native => self == AttachMode::Native,
            XdpMode::Generic => self == AttachMode::Generic,
        }
    }
}

/// Enforces bans with the XDP program.
pub struct XdpEnforcer {
    program: XdpProgram,
    pin_dir: PathBuf,
    interfaces: Vec<InterfaceStatus>,
    /// Held so the links stay ours while we run; the pins keep them after we exit.
    links: Vec<XdpLink>,
}

/// Pin of the link on `interface` in `mode`: the mode is part of the name so a restart
/// knows how the surviving link was attached.
fn link_pin(dir: &Path, interface: &str, mode: AttachMode) -> PathBuf {
    dir.join("links")
        .join(format!("{interface}@{}", mode.name()))
}

/// Existing link pins: (interface, mode, path).
fn pinned_links(dir: &Path) -> Vec<(String, AttachMode, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (interface, mode) = name.rsplit_once('@')?;
            Some((
                interface.to_string(),
                AttachMode::from_name(mode)?,
                entry.path(),
            ))
        })
        .collect()
}

/// Removes every pin pbxguard made under `dir` (links, program, maps): the kernel detaches
/// the program once no one holds it. Touches nothing else. True if anything was removed.
pub fn remove_pins(dir: &Path) -> bool {
    let mut removed = false;
    let mut paths: Vec<PathBuf> = pinned_links(dir).into_iter().map(|(_, _, p)| p).collect();
    paths.push(dir.join("prog"));
    paths.extend(
        pbxguard_common::maps::ALL
            .iter()
            .map(|m| super::program::map_pin_path(dir, m)),
    );
    for path in paths {
        if std::fs::remove_file(&path).is_ok() {
            removed = true;
        }
    }
    removed
}

fn pin_error(path: &Path, e: impl std::fmt::Display) -> EnforceError {
    EnforceError::Pin {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl XdpEnforcer {
    /// Loads the program, re-using pinned maps and links where they exist, and attaches it
    /// to every configured interface.
    pub fn start(config: &Config) -> Result<XdpEnforcer, EnforceError> {
        let pin_dir = config.daemon.bpffs.clone();
        bpffs::ensure(&pin_dir)?;
        let links_dir = pin_dir.join("links");
        std::fs::create_dir_all(&links_dir).map_err(|e| pin_error(&links_dir, e))?;
        let mut program = XdpProgram::load(&LoadOptions {
            pin_dir: Some(pin_dir.clone()),
            max_bans: config.ban.max_entries,
            force_no_scanner: false,
        })?;

        let existing = pinned_links(&pin_dir);
        let mut interfaces = Vec::new();
        let mut links = Vec::new();
        for name in &config.enforce.interfaces {
            let reusable = existing
                .iter()
                .find(|(iface, mode, _)| iface == name && mode.satisfies(config.enforce.xdp_mode));
            let replaced = match reusable {
                Some((_, mode, path)) => replace_in_link(&mut program, path)
                    .inspect_err(|e| {
                        tracing::warn!(interface = %name, error = %e, "pinned link unusable, attaching afresh");
                        let _ = std::fs::remove_file(path);
                    })
                    .ok()
                    .map(|link| (link, *mode)),
                None => None,
            };
            let (link, mode) = match replaced {
                Some((link, mode)) => {
                    tracing::info!(interface = %name, mode = mode.name(), "swapped new program into pinned link, no gap");
                    (link, mode)
                }
                None => {
                    // A stale pin in another mode would keep the old program attached.
                    for (iface, _, path) in existing.iter().filter(|(i, ..)| i == name) {
                        tracing::info!(interface = %iface, "removing link pinned in another mode");
                        let _ = std::fs::remove_file(path);
                    }
                    let (link, mode) =
                        attach(&mut program, name, config.enforce.xdp_mode, &pin_dir)?;
                    tracing::info!(interface = %name, mode = mode.name(), "attached XDP program");
                    (link, mode)
                }
            };
            interfaces.push(InterfaceStatus {
                name: name.clone(),
                mode: mode.name().into(),
                pinned: true,
            });
            links.push(link);
        }
        // Interfaces removed from the config: detach by removing their pins.
        for (iface, _, path) in &existing {
            if !config.enforce.interfaces.contains(iface) {
                tracing::info!(interface = %iface, "interface no longer configured, detaching");
                std::fs::remove_file(path).map_err(|e| pin_error(path, e))?;
            }
        }
        let prog_pin = pin_dir.join("prog");
        if prog_pin.exists() {
            std::fs::remove_file(&prog_pin).map_err(|e| pin_error(&prog_pin, e))?;
        }
        program
            .xdp()
            .pin(&prog_pin)
            .map_err(|e| pin_error(&prog_pin, e))?;
        Ok(XdpEnforcer {
            program,
            pin_dir,
            interfaces,
            links,
        })
    }

    /// The loaded program, for tests and benchmarks that inspect maps directly.
    pub fn program(&mut self) -> &mut XdpProgram {
        &mut self.program
    }
}

/// Atomically swaps our program into the link pinned at `path`.
fn replace_in_link(program: &mut XdpProgram, path: &Path) -> Result<XdpLink, EnforceError> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| pin_error(path, e))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_error(path, e))?;
    let xdp = program.xdp();
    let id = xdp.attach_to_link(link)?;
    Ok(xdp.take_link(id)?)
}

/// Attaches afresh in the configured mode (auto: native, then generic) and pins the link.
fn attach(
    program: &mut XdpProgram,
    interface: &str,
    wanted: XdpMode,
    pin_dir: &Path,
) -> Result<(XdpLink, AttachMode), EnforceError> {
    let candidates: &[AttachMode] = match wanted {
        XdpMode::Auto => &[AttachMode::Native, AttachMode::Generic],
        XdpMode::Native => &[AttachMode::Native],
        XdpMode::Generic => &[AttachMode::Generic],
    };
    let mut failures = Vec::new();
    for &mode in candidates {
        let xdp = program.xdp();
        match xdp.attach(interface, mode.aya()) {
            Ok(id) => {
                let link = xdp.take_link(id)?;
                let fd_link = FdLink::try_from(link).map_err(|_| EnforceError::Attach {
                    interface: interface.into(),
                    message: "the kernel attached via netlink, not bpf_link, so the attachment cannot be pinned; the XDP backend needs Linux 5.9 or newer".into(),
                })?;
                let path = link_pin(pin_dir, interface, mode);
                let pinned = fd_link.pin(&path).map_err(|e| pin_error(&path, e))?;
                let link =
                    XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_error(&path, e))?;
                return Ok((link, mode));
            }
            Err(e) => {
                tracing::debug!(interface, mode = mode.name(), error = %e, "attach failed");
                failures.push(format!("{}: {}", mode.name(), describe(&e)));
            }
        }
    }
    Err(EnforceError::Attach {
        interface: interface.into(),
        message: format!(
            "{}; check the name with `ip link`, and that no other XDP program is attached (`ip link show {interface}`)",
            failures.join("; ")
        ),
    })
}

/// The error with its OS-level cause, which aya keeps in `source()`.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Enforcer for XdpEnforcer {
    fn backend(&self) -> &'static str {
        "xdp"
    }

    fn interfaces(&self) -> Vec<InterfaceStatus> {
        self.interfaces.clone()
    }

    fn rules_off(&self) -> Vec<super::RuleOff> {
        self.program.rules_off()
    }

    fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.program.sync_allowlist(nets)
    }

    fn ban_many(&mut self, bans: &[(IpNet, Expiry)]) -> Vec<Result<(), EnforceError>> {
        self.program.ban_many(bans)
    }

    fn unban_many(&mut self, nets: &[IpNet]) -> Vec<Result<(), EnforceError>> {
        self.program.unban_many(nets)
    }

    fn banned(&self) -> Result<Vec<IpNet>, EnforceError> {
        Ok(self
            .program
            .bans()?
            .into_iter()
            .map(|(net, _)| net)
            .collect())
    }

    fn counters(&self) -> Arc<dyn Counters> {
        self.program.counter_reader()
    }

    fn set_perimeter(
        &mut self,
        perimeter: &super::perimeter::Perimeter,
    ) -> Result<(), EnforceError> {
        self.program.set_perimeter(perimeter)
    }

    fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.program.take_events()
    }

    fn set_geo(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.program.set_geo(nets)
    }

    fn set_blocklist(
        &mut self,
        want: &std::collections::BTreeMap<IpNet, u64>,
    ) -> Result<(), EnforceError> {
        self.program.set_blocklist(want)
    }

    fn set_pbx_trusted(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.program.set_pbx_trusted(nets)
    }

    fn shutdown(&mut self, detach: bool) -> Result<(), EnforceError> {
        if !detach {
            tracing::info!("exiting; XDP program stays attached and bans stay enforced");
            return Ok(());
        }
        // Removing the pins lets the kernel detach the links once our fds close.
        tracing::info!(interfaces = ?self.interfaces.iter().map(|i| &i.name).collect::<Vec<_>>(), "detaching XDP program");
        remove_pins(&self.pin_dir);
        // Closing our link fds is what finally detaches them.
        self.links.clear();
        self.interfaces.clear();
        Ok(())
    }
}
