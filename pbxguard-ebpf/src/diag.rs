//! Rare-path diagnostics: records for `aya-log` (the `AYA_LOGS` ring buffer), at debug level
//! under the target [`TARGET`], which the daemon forwards into its log (`tracing`).
//!
//! Only states that should not occur are noted: the `EVENTS` ring full (the daemon's reader
//! is behind and detection events are lost), an IPv6 extension chain longer than the parser
//! walks, and helper or map calls failing that the program's own checks say cannot fail.
//! Malformed input (a frame cut short, a bad IP version) is ordinary attacker junk: it is
//! counted (`unparsed`, `unclassified`), not logged.
//!
//! Nothing here runs for an ordinary packet. Each note is logged at most once a second per
//! CPU and kind, with the count of those left out since, so a flood of odd packets cannot
//! flood the log; and only while the daemon records debug for [`TARGET`]: it sets
//! `AYA_LOG_LEVEL` (read-only data) at load, so otherwise the verifier sees every call here
//! as dead code and the JIT emits none of it.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::map, maps::PerCpuArray};
use aya_log_ebpf::{
    debug,
    macro_support::{Level, level_enabled},
};

/// The `log` target of every record (`PBXGUARD_LOG=info,pbxguard::xdp=debug` shows them);
/// the daemon's `enforce::xdp_log::TARGET` is the same string.
pub const TARGET: &str = "pbxguard::xdp";

/// The kinds of note, each paced on its own.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Note {
    EventsLost = 0,
    V6ChainTooLong = 1,
    LoadBytesFailed = 2,
    BucketInsertFailed = 3,
}
const NOTES: u32 = 4;

/// When a kind was last logged on this CPU, and how many occurrences were not logged since.
#[repr(C)]
struct Pace {
    last_ns: u64,
    missed: u64,
}

#[map]
static DIAG_PACE: PerCpuArray<Pace> = PerCpuArray::with_max_entries(NOTES, 0);

/// Whether debug records are on: `AYA_LOG_LEVEL`, set by the daemon at load, is read-only
/// data, so the verifier sees a constant and drops a disabled note's call as dead code.
#[inline(always)]
fn on() -> bool {
    level_enabled(Level::Debug)
}

/// Whether a note of `kind` is logged now: the last one of its kind on this CPU is a second
/// old. Returns how many were left out since.
#[inline(always)]
fn due(kind: Note) -> Option<u64> {
    let pace = DIAG_PACE.get_ptr_mut(kind as u32)?;
    // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
    let pace = unsafe { &mut *pace };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    if pace.last_ns != 0 && now.wrapping_sub(pace.last_ns) < 1_000_000_000 {
        pace.missed += 1;
        return None;
    }
    let missed = pace.missed;
    pace.last_ns = now;
    pace.missed = 0;
    Some(missed)
}

// Each note is written by a function of its own (a BPF subprogram with its own stack frame):
// inlined, the record's construction spills into the verdict's frame and perturbs the hot
// path's registers. The verifier allows 512 bytes of stack for a whole call chain (the
// verdict's frame plus the deepest callee), so a note takes scalars, never pointers into the
// verdict's frame or the packet. aya-log-ebpf 0.2 ignores the macros' context argument.

/// `EVENTS.output` failed: the ring is full, so a detection event (flood or scanner) is
/// lost; the verdict stands.
#[inline(always)]
pub fn events_lost(flood: bool, error: i64) {
    if on() {
        events_lost_note(flood, error);
    }
}

#[inline(never)]
fn events_lost_note(flood: bool, error: i64) {
    let Some(missed) = due(Note::EventsLost) else {
        return;
    };
    let kind = if flood { "flood" } else { "scanner" };
    debug!(
        &(),
        target: TARGET,
        "EVENTS ring buffer full (error {}): a {} detection event was lost ({} more on this CPU since the last note); the daemon's xdp-events reader is behind",
        error,
        kind,
        missed
    );
}

/// An IPv6 packet from `source` whose extension header chain goes on past the `walked`
/// headers the parser follows: its ports are out of reach (dropped as `unclassified` while
/// port rules are on).
#[inline(always)]
pub fn v6_chain_too_long(source: &[u8; 16], walked: u32) {
    if on() {
        // Two scalars, not a pointer into the verdict's stack.
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = *source;
        v6_chain_too_long_note(
            u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
            u64::from_ne_bytes([i, j, k, l, m, n, o, p]),
            walked,
        );
    }
}

#[inline(never)]
fn v6_chain_too_long_note(high: u64, low: u64, walked: u32) {
    let Some(missed) = due(Note::V6ChainTooLong) else {
        return;
    };
    // SAFETY: two u64 are sixteen plain bytes, in the order they came in.
    let source: [u8; 16] = unsafe { core::mem::transmute([high, low]) };
    debug!(
        &(),
        target: TARGET,
        "IPv6 packet from {:i} has more than {} extension headers: its ports are out of reach ({} more on this CPU since the last note)",
        source,
        walked,
        missed
    );
}

/// `bpf_xdp_load_bytes` refused a range the program had checked: the scanner check is
/// skipped for this packet.
#[inline(always)]
pub fn load_bytes_failed(error: i64, offset: u32, len: u32) {
    if on() {
        load_bytes_failed_note(error, offset, len);
    }
}

#[inline(never)]
fn load_bytes_failed_note(error: i64, offset: u32, len: u32) {
    let Some(missed) = due(Note::LoadBytesFailed) else {
        return;
    };
    debug!(
        &(),
        target: TARGET,
        "bpf_xdp_load_bytes failed (error {}) for {} bytes at offset {}: scanner check skipped ({} more on this CPU since the last note)",
        error,
        len,
        offset,
        missed
    );
}

/// A new source's flood bucket could not be stored (the LRU map evicts, so this should not
/// happen): the flood limit does not count this packet.
#[inline(always)]
pub fn bucket_insert_failed(error: i64) {
    if on() {
        bucket_insert_failed_note(error);
    }
}

#[inline(never)]
fn bucket_insert_failed_note(error: i64) {
    let Some(missed) = due(Note::BucketInsertFailed) else {
        return;
    };
    debug!(
        &(),
        target: TARGET,
        "BUCKETS insert failed (error {}): the flood limit did not count a new source's packet ({} more on this CPU since the last note)",
        error,
        missed
    );
}
