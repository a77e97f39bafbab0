//! The pbxguard XDP program: drops packets from banned sources before the kernel's network
//! stack (or the PBX) sees them.
//!
//! Verdict order (ARCHITECTURE.md, "The XDP program's verdict order"): unparseable -> PASS;
//! allowlisted -> PASS; banned and not expired -> DROP; geo-blocked -> DROP; protected port
//! from an untrusted source -> DROP; SIP flood over the limit -> DROP; SIP scanner
//! User-Agent -> DROP; else PASS. Every verdict bumps a per-CPU counter for its reason.
#![no_std]
#![no_main]

mod parse;
mod rules;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use pbxguard_common::{
    BanEntry, COUNTER_SLOTS, Counter, DEFAULT_MAX_ALLOW, DEFAULT_MAX_BANS, Reason,
};

use crate::parse::{Packet, Source};

#[map]
static ALLOW_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOW, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAX_ALLOW, 0);
#[map]
static BAN_V4: LpmTrie<[u8; 4], BanEntry> = LpmTrie::with_max_entries(DEFAULT_MAX_BANS, 0);
#[map]
static BAN_V6: LpmTrie<[u8; 16], BanEntry> = LpmTrie::with_max_entries(DEFAULT_MAX_BANS, 0);
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[xdp]
pub fn pbxguard(ctx: XdpContext) -> u32 {
    let reason = match parse::parse(&ctx) {
        Some(packet) => classify(&ctx, &packet),
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
fn classify(ctx: &XdpContext, packet: &Packet) -> Reason {
    let ban = match packet.source {
        Source::V4(addr) => {
            let key = Key::new(32, addr);
            if ALLOW_V4.get(&key).is_some() {
                return Reason::Allowlisted;
            }
            BAN_V4.get(&key)
        }
        Source::V6(addr) => {
            let key = Key::new(128, addr);
            if ALLOW_V6.get(&key).is_some() {
                return Reason::Allowlisted;
            }
            BAN_V6.get(&key)
        }
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
    if rules::geo_blocked(&packet.source) {
        return Reason::GeoBlocked;
    }
    if let Some(t) = &packet.transport {
        if rules::protected_denies(&packet.source, t) {
            return Reason::ProtectedPort;
        }
        if rules::is_sip(t) {
            let settings = rules::settings();
            if rules::flooding(&packet.source, t, &settings) {
                return Reason::Flood;
            }
            if rules::scanner(ctx, &packet.source, t, &settings) {
                return Reason::Scanner;
            }
        }
    }
    pass
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
