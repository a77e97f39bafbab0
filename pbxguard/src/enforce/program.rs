//! The loaded XDP object and typed access to its maps.
//!
//! Used by the XDP backend (with pins) and directly by the `BPF_PROG_TEST_RUN` tests and the
//! benchmarks (without pins), so both exercise the same load path.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, ProgramType, Xdp},
    sys::{BpfHelper, is_helper_supported},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use pbxguard_common::{
    BanEntry, COUNTER_SLOTS, Counter, DEFAULT_MAX_ALLOW, PROGRAM_NAME, PROGRAM_NAME_BASIC, Reason,
    maps,
};

use super::{
    EnforceError, ReasonStats, RuleOff,
    overlap::{BanTable, Expiry},
    xdp_log::{self, LogReader},
};

/// The compiled XDP object, built by `build.rs` from the `pbxguard-ebpf` crate.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pbxguard"));

/// How to load the program.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Pin (and re-use pinned) maps under `<dir>/maps/`; `None` loads private maps.
    pub pin_dir: Option<PathBuf>,
    /// Capacity of each ban map.
    pub max_bans: u32,
    /// Load the program without the scanner rule even where the kernel could run it, as on
    /// a kernel without its helpers (to test that fallback).
    pub force_no_scanner: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: None,
            max_bans: pbxguard_common::DEFAULT_MAX_BANS,
            force_no_scanner: false,
        }
    }
}

/// The helpers the scanner rule calls, with the Linux release that gave them to XDP.
const SCANNER_HELPERS: [(&str, BpfHelper, &str); 2] = [
    ("bpf_loop", BpfHelper::BPF_FUNC_loop, "5.17"),
    (
        "bpf_xdp_load_bytes",
        BpfHelper::BPF_FUNC_xdp_load_bytes,
        "5.18",
    ),
];

/// The scanner rule's helpers this kernel lacks, as `name (Linux x.y)`. A probe that fails
/// outright counts as present: loading the full program then tells.
fn missing_scanner_helpers() -> Vec<String> {
    let named = |(name, _, version): &(&str, BpfHelper, &str)| format!("{name} (Linux {version})");
    // The fault tests stand in for an older kernel here.
    fail::fail_point!("xdp-scanner-helpers", |_| SCANNER_HELPERS
        .iter()
        .map(named)
        .collect());
    SCANNER_HELPERS
        .iter()
        .filter(|(_, helper, _)| {
            matches!(is_helper_supported(ProgramType::Xdp, *helper), Ok(false))
        })
        .map(named)
        .collect()
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, EnforceError> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| MapError::InvalidName { name: name.into() })?
        .try_into()?)
}

/// Loads the full program where the kernel can run it, otherwise the one without the scanner
/// rule (a kernel without its helpers, or whose verifier refuses its code): everything else
/// stays in XDP rather than the whole program failing. Returns the loaded program's name and
/// the rules left off.
fn load_program(
    ebpf: &mut Ebpf,
    force_no_scanner: bool,
) -> Result<(&'static str, Vec<RuleOff>), EnforceError> {
    let why = if force_no_scanner {
        "the program was loaded without it on request (LoadOptions::force_no_scanner)".to_string()
    } else {
        let missing = missing_scanner_helpers();
        if !missing.is_empty() {
            format!(
                "this kernel lacks {}; upgrade to Linux 5.18 or newer to turn it on",
                missing.join(" and ")
            )
        } else {
            match program_mut(ebpf, PROGRAM_NAME)?.load() {
                Ok(()) => return Ok((PROGRAM_NAME, Vec::new())),
                Err(ProgramError::LoadError {
                    io_error,
                    verifier_log,
                }) => {
                    tracing::debug!(%verifier_log, "the verifier's log for the full program");
                    format!(
                        "this kernel's verifier refuses its code ({io_error}); upgrade the kernel, or report it with the `PBXGUARD_LOG=debug` output"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    program_mut(ebpf, PROGRAM_NAME_BASIC)?.load()?;
    let off = RuleOff {
        rule: Reason::Scanner.name(),
        reason: format!(
            "the [scanners] User-Agent check is off: {why}; bans, allowlist, geo, [[protect]] and [flood] are enforced in XDP"
        ),
    };
    tracing::warn!(rule = off.rule, reason = %off.reason, "XDP program loaded without a rule");
    Ok((PROGRAM_NAME_BASIC, vec![off]))
}

/// Where map `name` is pinned under `dir`.
pub fn map_pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("maps").join(name)
}

/// A pair of LPM tries, IPv4 and IPv6, holding one kind of entry (bans or allowlist).
struct Tries<V: aya::Pod> {
    v4: LpmTrie<MapData, [u8; 4], V>,
    v6: LpmTrie<MapData, [u8; 16], V>,
    names: [&'static str; 2],
    capacity: u32,
}

impl<V: aya::Pod> Tries<V> {
    fn take(
        ebpf: &mut Ebpf,
        names: [&'static str; 2],
        capacity: u32,
    ) -> Result<Self, EnforceError> {
        Ok(Tries {
            v4: take(ebpf, names[0])?,
            v6: take(ebpf, names[1])?,
            names,
            capacity,
        })
    }

    fn insert(&mut self, net: IpNet, value: V) -> Result<(), EnforceError> {
        match net {
            IpNet::V4(n) => self
                .v4
                .insert(&v4_key(&n), value, 0)
                .map_err(full(self.names[0], self.capacity)),
            IpNet::V6(n) => self
                .v6
                .insert(&v6_key(&n), value, 0)
                .map_err(full(self.names[1], self.capacity)),
        }
    }

    fn remove(&mut self, net: IpNet) -> Result<(), EnforceError> {
        let result = match net {
            IpNet::V4(n) => self.v4.remove(&v4_key(&n)),
            IpNet::V6(n) => self.v6.remove(&v6_key(&n)),
        };
        ignore_missing(result)
    }

    fn entries(&self) -> Result<Vec<(IpNet, V)>, EnforceError> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            let (key, value) = item?;
            out.push((key_v4_net(&key), value));
        }
        for item in self.v6.iter() {
            let (key, value) = item?;
            out.push((key_v6_net(&key), value));
        }
        Ok(out)
    }
}

impl Tries<u32> {
    /// Makes the tries hold exactly `nets`, adding new entries before removing stale ones
    /// so that nothing wanted is ever briefly missing.
    fn sync(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        for net in nets {
            self.insert(*net, 1)?;
        }
        let want: std::collections::HashSet<&IpNet> = nets.iter().collect();
        for (old, _) in self.entries()? {
            if !want.contains(&old) {
                self.remove(old)?;
            }
        }
        Ok(())
    }
}

/// The ban maps: single addresses (/32, /128) in the exact hash maps, wider networks in
/// the LPM tries. The program checks the hash first; each entry carries its effective
/// expiry, so the answer is the one the longest prefix would give.
struct BanMaps {
    exact4: aya::maps::HashMap<MapData, [u8; 4], BanEntry>,
    exact6: aya::maps::HashMap<MapData, [u8; 16], BanEntry>,
    tries: Tries<BanEntry>,
}

impl BanMaps {
    fn take(ebpf: &mut Ebpf, capacity: u32) -> Result<BanMaps, EnforceError> {
        Ok(BanMaps {
            exact4: take(ebpf, maps::BAN_EXACT_V4)?,
            exact6: take(ebpf, maps::BAN_EXACT_V6)?,
            tries: Tries::take(ebpf, [maps::BAN_V4, maps::BAN_V6], capacity)?,
        })
    }

    fn insert(&mut self, net: IpNet, entry: BanEntry) -> Result<(), EnforceError> {
        let capacity = self.tries.capacity;
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => self
                .exact4
                .insert(n.addr().octets(), entry, 0)
                .map_err(full(maps::BAN_EXACT_V4, capacity)),
            IpNet::V6(n) if n.prefix_len() == 128 => self
                .exact6
                .insert(n.addr().octets(), entry, 0)
                .map_err(full(maps::BAN_EXACT_V6, capacity)),
            _ => self.tries.insert(net, entry),
        }
    }

    fn remove(&mut self, net: IpNet) -> Result<(), EnforceError> {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => {
                ignore_missing(self.exact4.remove(&n.addr().octets()))
            }
            IpNet::V6(n) if n.prefix_len() == 128 => {
                ignore_missing(self.exact6.remove(&n.addr().octets()))
            }
            _ => self.tries.remove(net),
        }
    }

    /// Moves single-address bans that a daemon before the exact maps pinned in the tries
    /// into the exact maps (insert first, then delete: never a moment unbanned).
    fn migrate(&mut self) -> Result<usize, EnforceError> {
        let hosts: Vec<(IpNet, BanEntry)> = self
            .tries
            .entries()?
            .into_iter()
            .filter(|(net, _)| net.prefix_len() == net.max_prefix_len())
            .collect();
        for (net, entry) in &hosts {
            self.insert(*net, *entry)?;
            self.tries.remove(*net)?;
        }
        Ok(hosts.len())
    }

    fn entries(&self) -> Result<Vec<(IpNet, BanEntry)>, EnforceError> {
        let mut out = self.tries.entries()?;
        for item in self.exact4.iter() {
            let (key, value) = item?;
            out.push((IpNet::from(std::net::IpAddr::from(key)), value));
        }
        for item in self.exact6.iter() {
            let (key, value) = item?;
            out.push((IpNet::from(std::net::IpAddr::from(key)), value));
        }
        Ok(out)
    }
}

/// The loaded (not yet attached) program and its maps.
pub struct XdpProgram {
    ebpf: Ebpf,
    /// Which of the object's programs is loaded.
    name: &'static str,
    rules_off: Vec<RuleOff>,
    allow: Tries<u32>,
    bans: BanMaps,
    geo: Tries<u32>,
    pbx: Tries<u32>,
    /// Blocklist feeds' entries, each with the mask of feeds listing it.
    block: Tries<u64>,
    counters: Arc<CounterMap>,
    /// The bans with their own expiries; map entries carry the effective ones.
    table: BanTable,
    perimeter: super::perimeter::PerimeterMaps,
    events: Option<aya::maps::RingBuf<MapData>>,
    /// The `xdp-log` thread forwarding the program's diagnostics, while the tracing filter
    /// keeps any of them.
    _log: Option<LogReader>,
}

pub(super) fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, EnforceError> {
    let map = ebpf.take_map(name).ok_or_else(|| MapError::InvalidName {
        name: name.to_string(),
    })?;
    Ok(T::try_from(map)?)
}

fn v4_key(net: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn v6_key(net: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn key_v4_net(key: &Key<[u8; 4]>) -> IpNet {
    let prefix = key.prefix_len() as u8;
    IpNet::V4(Ipv4Net::new(key.data().into(), prefix.min(32)).expect("prefix clamped"))
}

fn key_v6_net(key: &Key<[u8; 16]>) -> IpNet {
    let prefix = key.prefix_len() as u8;
    IpNet::V6(Ipv6Net::new(key.data().into(), prefix.min(128)).expect("prefix clamped"))
}

/// Turns "no space" from the kernel into an actionable error.
fn full(map: &'static str, capacity: u32) -> impl FnOnce(MapError) -> EnforceError {
    move |e| match &e {
        // Tries say ENOSPC when full, hash maps E2BIG.
        MapError::SyscallError(s)
            if matches!(s.io_error.raw_os_error(), Some(libc::ENOSPC | libc::E2BIG)) =>
        {
            EnforceError::Full { map, capacity }
        }
        _ => EnforceError::Map(e),
    }
}

impl XdpProgram {
    /// Loads the object into the kernel (verifier included) with the given map sizes and pins.
    pub fn load(options: &LoadOptions) -> Result<XdpProgram, EnforceError> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::BAN_V4, options.max_bans)
            .map_max_entries(maps::BAN_V6, options.max_bans)
            .map_max_entries(maps::BAN_EXACT_V4, options.max_bans)
            .map_max_entries(maps::BAN_EXACT_V6, options.max_bans);
        let pins: Vec<(&str, PathBuf)> = match &options.pin_dir {
            Some(dir) => {
                let maps_dir = dir.join("maps");
                std::fs::create_dir_all(&maps_dir).map_err(|e| EnforceError::Pin {
                    path: maps_dir.clone(),
                    message: e.to_string(),
                })?;
                maps::ALL
                    .iter()
                    .map(|name| (*name, map_pin_path(dir, name)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        // The program writes only the diagnostics the tracing filter keeps (read-only
        // data: the verifier drops the rest as dead code); an object without aya-log has
        // no such global, which is fine.
        let log_level = xdp_log::level();
        loader.override_global(aya_log::LEVEL, &log_level, false);
        let mut ebpf = loader.load(OBJECT)?;
        let (name, rules_off) = load_program(&mut ebpf, options.force_no_scanner)?;
        let log = if log_level == 0 {
            None
        } else {
            LogReader::start(&mut ebpf)
        };
        let mut bans = BanMaps::take(&mut ebpf, options.max_bans)?;
        warn_if_resized(&bans.tries, options.max_bans);
        let moved = bans.migrate()?;
        if moved > 0 {
            tracing::info!(
                moved,
                "single-address bans moved from the LPM tries to the exact maps"
            );
        }
        Ok(XdpProgram {
            allow: Tries::take(
                &mut ebpf,
                [maps::ALLOW_V4, maps::ALLOW_V6],
                DEFAULT_MAX_ALLOW,
            )?,
            bans,
            geo: Tries::take(
                &mut ebpf,
                [maps::GEO_V4, maps::GEO_V6],
                pbxguard_common::MAX_GEO,
            )?,
            pbx: Tries::take(
                &mut ebpf,
                [maps::PBX_V4, maps::PBX_V6],
                pbxguard_common::MAX_TRUSTED,
            )?,
            block: Tries::take(
                &mut ebpf,
                [maps::BLOCK_V4, maps::BLOCK_V6],
                pbxguard_common::MAX_BLOCK,
            )?,
            counters: Arc::new(CounterMap {
                reasons: take(&mut ebpf, maps::COUNTERS)?,
                feeds: take(&mut ebpf, maps::FEED_COUNTERS)?,
            }),
            table: BanTable::default(),
            perimeter: super::perimeter::PerimeterMaps::take(&mut ebpf)?,
            events: Some(take(&mut ebpf, maps::EVENTS)?),
            _log: log,
            ebpf,
            name,
            rules_off,
        })
    }

    /// The program, for attaching or `test_run`.
    pub fn xdp(&mut self) -> &mut Xdp {
        program_mut(&mut self.ebpf, self.name).expect("loaded in load")
    }

    /// Which program of the object is loaded: [`PROGRAM_NAME`], or [`PROGRAM_NAME_BASIC`]
    /// without the scanner rule.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The rules this program does not enforce, and why.
    pub fn rules_off(&self) -> Vec<RuleOff> {
        self.rules_off.clone()
    }

    /// Inserts or replaces the ban on `net`.
    pub fn insert_ban(&mut self, net: IpNet, entry: BanEntry) -> Result<(), EnforceError> {
        self.bans.insert(net, entry)
    }

    /// Removes the ban on exactly `net`; absent is fine.
    pub fn remove_ban(&mut self, net: IpNet) -> Result<(), EnforceError> {
        self.bans.remove(net)
    }

    /// Every ban in the maps with its entry.
    pub fn bans(&self) -> Result<Vec<(IpNet, BanEntry)>, EnforceError> {
        self.bans.entries()
    }

    /// Adds `net` to the allowlist.
    pub fn insert_allow(&mut self, net: IpNet) -> Result<(), EnforceError> {
        self.allow.insert(net, 1)
    }

    /// Removes `net` from the allowlist; absent is fine.
    pub fn remove_allow(&mut self, net: IpNet) -> Result<(), EnforceError> {
        self.allow.remove(net)
    }

    /// Every allowlisted network in the maps.
    pub fn allowlist(&self) -> Result<Vec<IpNet>, EnforceError> {
        Ok(self
            .allow
            .entries()?
            .into_iter()
            .map(|(net, _)| net)
            .collect())
    }

    /// Makes the allowlist exactly `nets`, adding before removing so nothing allowed is
    /// ever briefly unprotected.
    pub fn sync_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.allow.sync(nets)
    }

    /// Replaces the perimeter rules (trusted-only ports, SIP ports, flood limit, scanners).
    pub fn set_perimeter(
        &mut self,
        perimeter: &super::perimeter::Perimeter,
    ) -> Result<(), EnforceError> {
        self.perimeter.apply(perimeter)
    }

    /// Makes the PBX-trusted peers exactly `nets` (added before stale ones go).
    pub fn set_pbx_trusted(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.pbx.sync(nets)
    }

    /// Makes the blocklist entries exactly `want` (network -> mask of feeds): changed and new
    /// entries are written first, each in place (one key at a time, never absent while
    /// wanted), then the stale ones go; so a feed's refresh has no window without it.
    pub fn set_blocklist(
        &mut self,
        want: &std::collections::BTreeMap<IpNet, u64>,
    ) -> Result<(), EnforceError> {
        let held: std::collections::HashMap<IpNet, u64> =
            self.block.entries()?.into_iter().collect();
        for (net, mask) in want {
            if held.get(net) != Some(mask) {
                self.block.insert(*net, *mask)?;
            }
        }
        for net in held.keys() {
            if !want.contains_key(net) {
                self.block.remove(*net)?;
            }
        }
        Ok(())
    }

    /// Makes the geo-blocked networks exactly `nets` (added before stale ones go).
    pub fn set_geo(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.geo.sync(nets)
    }

    /// The ring buffer of detection events (flood overruns, scanners); taken once, by the
    /// daemon's event reader.
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        self.events.take()
    }

    /// Packets and bytes per reason, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<ReasonStats>, EnforceError> {
        super::Counters::read(self.counters.as_ref())
    }

    /// A reader of the counters for other threads.
    pub fn counter_reader(&self) -> Arc<dyn super::Counters> {
        self.counters.clone()
    }

    /// Bans each network (see [`super::Enforcer::ban_many`]), keeping nested entries'
    /// effective expiries right.
    pub fn ban_many(&mut self, bans: &[(IpNet, Expiry)]) -> Vec<Result<(), EnforceError>> {
        bans.iter()
            .map(|(net, expires)| self.ban_one(*net, *expires))
            .collect()
    }

    fn ban_one(&mut self, net: IpNet, expires: Expiry) -> Result<(), EnforceError> {
        let old = self.table.insert(net, expires);
        let effective = self.table.effective(&net).expect("just inserted");
        if let Err(e) = self.bans.insert(net, ban_entry(effective)) {
            match old {
                Some(old) => self.table.insert(net, old),
                None => self.table.remove(&net),
            };
            return Err(e);
        }
        self.refresh_nested(&net)
    }

    /// Lifts bans on exactly these networks; absent is fine.
    pub fn unban_many(&mut self, nets: &[IpNet]) -> Vec<Result<(), EnforceError>> {
        nets.iter()
            .map(|net| {
                self.bans.remove(*net)?;
                self.table.remove(net);
                self.refresh_nested(net)
            })
            .collect()
    }

    /// Rewrites the entries inside `net`: their effective expiry may have changed with it.
    /// These are updates of existing keys; one that fails leaves that entry's old expiry
    /// (logged), never a ban half-made or half-lifted.
    fn refresh_nested(&mut self, net: &IpNet) -> Result<(), EnforceError> {
        for inner in self.table.nested(net) {
            let effective = self.table.effective(&inner).expect("in the table");
            if let Err(e) = self.bans.insert(inner, ban_entry(effective)) {
                tracing::error!(net = %inner, error = %e, "updating a nested ban's expiry failed");
            }
        }
        Ok(())
    }
}

fn ban_entry(expires: Expiry) -> BanEntry {
    BanEntry {
        expires_boot_ns: super::clock::expiry_to_boot_ns(expires),
    }
}

/// The per-CPU verdict and per-feed counters, shared with status and metrics readers.
pub struct CounterMap {
    reasons: PerCpuArray<MapData, Counter>,
    feeds: PerCpuArray<MapData, Counter>,
}

impl super::Counters for CounterMap {
    fn feeds(&self) -> Result<Vec<(u64, u64)>, EnforceError> {
        (0..pbxguard_common::MAX_FEEDS)
            .map(|feed| {
                let per_cpu = self.feeds.get(&feed, 0)?;
                Ok(per_cpu
                    .iter()
                    .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
            })
            .collect()
    }

    fn read(&self) -> Result<Vec<ReasonStats>, EnforceError> {
        debug_assert!(Reason::ALL.len() as u32 <= COUNTER_SLOTS);
        let mut out = Vec::new();
        for reason in Reason::ALL {
            let per_cpu = self.reasons.get(&(reason as u32), 0)?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            out.push(ReasonStats::new(reason, packets, bytes));
        }
        Ok(out)
    }
}

/// The bans in the maps pinned under `dir`, read without loading the program: how the
/// ledger checks (tests, `pbxguard` tooling) see what the kernel enforces.
pub fn pinned_bans(dir: &Path) -> Result<Vec<(IpNet, BanEntry)>, EnforceError> {
    let open = |name: &str| -> Result<MapData, EnforceError> {
        Ok(MapData::from_pin(map_pin_path(dir, name))?)
    };
    let bans = BanMaps {
        exact4: aya::maps::HashMap::try_from(aya::maps::Map::HashMap(open(maps::BAN_EXACT_V4)?))?,
        exact6: aya::maps::HashMap::try_from(aya::maps::Map::HashMap(open(maps::BAN_EXACT_V6)?))?,
        tries: Tries::<BanEntry> {
            v4: LpmTrie::try_from(aya::maps::Map::LpmTrie(open(maps::BAN_V4)?))?,
            v6: LpmTrie::try_from(aya::maps::Map::LpmTrie(open(maps::BAN_V6)?))?,
            names: [maps::BAN_V4, maps::BAN_V6],
            capacity: 0,
        },
    };
    bans.entries()
}

/// The pinned exact map of single IPv4 bans under `dir`, for benchmarks that watch a ban
/// arrive in the kernel.
pub fn pinned_exact_v4(
    dir: &Path,
) -> Result<aya::maps::HashMap<MapData, [u8; 4], BanEntry>, EnforceError> {
    let data = MapData::from_pin(map_pin_path(dir, maps::BAN_EXACT_V4))?;
    Ok(aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))?)
}

/// A pinned ban map keeps the size it was created with; say so when the config differs.
fn warn_if_resized(bans: &Tries<BanEntry>, configured: u32) {
    if let Ok(info) = aya::maps::IterableMap::map(&bans.v4).info()
        && info.max_entries() != configured
    {
        tracing::warn!(
            pinned = info.max_entries(),
            configured,
            "[ban] max_entries changed but the pinned ban maps keep their size; to resize, stop with \
             `pbxguard run --detach-on-exit` (or remove the pins) and start again: bans are restored from the journal"
        );
    }
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), EnforceError> {
    match result {
        Ok(()) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An unattached program is a complete enforcer for `BPF_PROG_TEST_RUN` and benchmarks:
/// the same maps and verdicts, fed frames by the caller instead of a NIC.
impl super::Enforcer for XdpProgram {
    fn backend(&self) -> &'static str {
        "xdp-unattached"
    }

    fn interfaces(&self) -> Vec<super::InterfaceStatus> {
        Vec::new()
    }

    fn rules_off(&self) -> Vec<RuleOff> {
        XdpProgram::rules_off(self)
    }

    fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        self.sync_allowlist(nets)
    }

    fn ban_many(&mut self, bans: &[(IpNet, Expiry)]) -> Vec<Result<(), EnforceError>> {
        XdpProgram::ban_many(self, bans)
    }

    fn unban_many(&mut self, nets: &[IpNet]) -> Vec<Result<(), EnforceError>> {
        XdpProgram::unban_many(self, nets)
    }

    fn banned(&self) -> Result<Vec<IpNet>, EnforceError> {
        Ok(self.bans()?.into_iter().map(|(net, _)| net).collect())
    }

    fn counters(&self) -> Arc<dyn super::Counters> {
        self.counter_reader()
    }

    fn set_perimeter(
        &mut self,
        perimeter: &super::perimeter::Perimeter,
    ) -> Result<(), EnforceError> {
        XdpProgram::set_perimeter(self, perimeter)
    }

    fn take_events(&mut self) -> Option<aya::maps::RingBuf<MapData>> {
        XdpProgram::take_events(self)
    }

    fn set_geo(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        XdpProgram::set_geo(self, nets)
    }

    fn set_blocklist(
        &mut self,
        want: &std::collections::BTreeMap<IpNet, u64>,
    ) -> Result<(), EnforceError> {
        XdpProgram::set_blocklist(self, want)
    }

    fn set_pbx_trusted(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        XdpProgram::set_pbx_trusted(self, nets)
    }

    fn shutdown(&mut self, _detach: bool) -> Result<(), EnforceError> {
        Ok(())
    }
}
