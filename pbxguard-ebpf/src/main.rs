//! The pbxguard XDP program: drops packets from banned sources before the kernel's network
//! stack (or the PBX) sees them.
//!
//! Verdict order (ARCHITECTURE.md, "The XDP program's verdict order"): unparseable -> PASS;
//! allowlisted -> PASS; PBX-trusted peer -> the SIP flood limit only, then PASS; banned and not expired -> DROP; listed by a blocklist feed -> DROP; geo-blocked -> DROP; ports out of
//! reach while port rules are on -> DROP; protected port from an untrusted source -> DROP;
//! SIP flood over the limit -> DROP; SIP scanner User-Agent -> DROP; else PASS. Every verdict
//! bumps a per-CPU counter for its reason.
//!
//! The object holds two programs: `pbxguard`, and `pbxguard_basic` without the scanner rule
//! for kernels that lack its helpers (the verifier rejects an unknown helper even in code
//! that never runs, so the rule must be absent, not switched off).
#![no_std]
#![no_main]

mod diag;
mod parse;
mod rules;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action},
    helpers::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use pbxguard_common::{
    BanEntry, COUNTER_SLOTS, Counter, DEFAULT_MAX_ALLOW, DEFAULT_MAX_BANS, MAX_TRUSTED, Reason,
};

use crate::parse::{Packet, Upper};

#[map]
static ALLOW_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOW, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOW, 0);
#[map]
static BAN_V4: LpmTrie<[u8; 4], BanEntry> = LpmTrie::with_max_entries(DEFAULT_MAX_BANS, 0);
#[map]
static BAN_V6: LpmTrie<[u8; 16], BanEntry> = LpmTrie::with_max_entries(DEFAULT_MAX_BANS, 0);
// Not preallocated: a million-entry hash would otherwise pin its memory at load.
#[map]
static BAN_EXACT_V4: HashMap<[u8; 4], BanEntry> =
    HashMap::with_max_entries(DEFAULT_MAX_BANS, BPF_F_NO_PREALLOC);
#[map]
static BAN_EXACT_V6: HashMap<[u8; 16], BanEntry> =
    HashMap::with_max_entries(DEFAULT_MAX_BANS, BPF_F_NO_PREALLOC);
#[map]
static PBX_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_TRUSTED, 0);
#[map]
static PBX_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_TRUSTED, 0);
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Every rule; needs `bpf_loop` (Linux 5.17) and `bpf_xdp_load_bytes` (5.18).
#[xdp]
pub fn pbxguard(ctx: XdpContext) -> u32 {
    verdict::<true>(&ctx)
}

/// Every rule but the scanner User-Agent check, for older kernels.
#[xdp]
pub fn pbxguard_basic(ctx: XdpContext) -> u32 {
    verdict::<false>(&ctx)
}

#[inline(always)]
fn verdict<const SCANNER: bool>(ctx: &XdpContext) -> u32 {
    let reason = match parse::parse(ctx) {
        Some(packet) => classify::<SCANNER>(ctx, &packet),
        None => Reason::Unparsed,
    };
    count(reason, (ctx.data_end() - ctx.data()) as u64);
    if reason.drops() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Applies the rules in verdict order to a parsed packet.
#[inline(always)]
fn classify<const SCANNER: bool>(ctx: &XdpContext, packet: &Packet) -> Reason {
    let source = &packet.source;
    let ban = if source.v6 {
        let key = Key::new(128, source.addr);
        if ALLOW_V6.get(&key).is_some() {
            return Reason::Allowlisted;
        }
        if PBX_V6.get(&key).is_some() {
            return pbx_trusted::<SCANNER>(packet);
        }
        // SAFETY: the entry is read, not kept past this function.
        unsafe { BAN_EXACT_V6.get(source.addr) }.or_else(|| BAN_V6.get(&key))
    } else {
        let key = Key::new(32, source.v4());
        if ALLOW_V4.get(&key).is_some() {
            return Reason::Allowlisted;
        }
        if PBX_V4.get(&key).is_some() {
            return pbx_trusted::<SCANNER>(packet);
        }
        let addr = source.v4();
        // SAFETY: as above.
        unsafe { BAN_EXACT_V4.get(addr) }.or_else(|| BAN_V4.get(&key))
    };
    let mut pass = Reason::Passed;
    if let Some(entry) = ban {
        let expires = entry.expires_boot_ns;
        // SAFETY: a plain helper call with no arguments.
        if expires == 0 || unsafe { bpf_ktime_get_boot_ns() } < expires {
            return Reason::Banned;
        }
        pass = Reason::BanExpired;
    }
    if let Some(feeds) = rules::blocklisted(&packet.source) {
        rules::count_feed(feeds, (ctx.data_end() - ctx.data()) as u64);
        return Reason::Blocklisted;
    }
    if rules::geo_blocked(&packet.source) {
        return Reason::GeoBlocked;
    }
    match packet.upper {
        Upper::Ports => {}
        Upper::NoPorts => return pass,
        // What the port rules cannot judge must not pass them unjudged.
        Upper::Unreachable if rules::port_rules_on() => return Reason::Unclassified,
        Upper::Unreachable => return pass,
    }
    let t = &packet.transport;
    if rules::protected_denies(&packet.source, t) {
        return Reason::ProtectedPort;
    }
    if rules::is_sip(t) {
        let settings = rules::settings();
        if rules::flooding::<SCANNER>(&packet.source, t, &settings) {
            return Reason::Flood;
        }
        if SCANNER && rules::scanner(ctx, &packet.source, packet.ip, t, &settings) {
            return Reason::Scanner;
        }
    }
    pass
}

/// A peer the PBX is configured to use: no ban, geo, port or scanner rule applies (a forged
/// packet must not get it cut off), but a flood from it is still dropped.
#[inline(always)]
fn pbx_trusted<const SCANNER: bool>(packet: &Packet) -> Reason {
    if matches!(packet.upper, Upper::Ports) && rules::is_sip(&packet.transport) {
        let settings = rules::settings();
        if rules::flooding::<SCANNER>(&packet.source, &packet.transport, &settings) {
            return Reason::Flood;
        }
    }
    Reason::PbxTrusted
}

#[inline(always)]
fn count(reason: Reason, bytes: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, so no other CPU writes it; the pointer comes from the map.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
