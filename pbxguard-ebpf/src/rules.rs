//! The perimeter rules that follow allowlist and bans: geo blocks, trusted-only ports, the
//! per-source SIP flood limit and scanner User-Agent signatures. Each is driven by maps the
//! daemon fills at runtime, so rules change without reloading the program.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_loop, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use pbxguard_common::{
    Bucket, DetectionEvent, EVENT_FLOOD, EVENT_SCANNER, FOLD, MAX_BUCKETS, MAX_GEO,
    MAX_PROTECTED_PORTS, MAX_SIGNATURES, MAX_SIP_PORTS, MAX_TRUSTED, PortKey, SCAN_WINDOW,
    Settings, Signature,
};

use crate::parse::{IPPROTO_UDP, Source, Transport};

#[map]
static GEO_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_GEO, 0);
#[map]
static GEO_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_GEO, 0);
#[map]
static PROTECTED: HashMap<PortKey, u32> = HashMap::with_max_entries(MAX_PROTECTED_PORTS, 0);
#[map]
static TRUSTED_V4: LpmTrie<[u8; 8], u32> = LpmTrie::with_max_entries(MAX_TRUSTED, 0);
#[map]
static TRUSTED_V6: LpmTrie<[u8; 20], u32> = LpmTrie::with_max_entries(MAX_TRUSTED, 0);
#[map]
static SIP_PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAX_SIP_PORTS, 0);
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static BUCKETS: LruHashMap<[u8; 16], Bucket> = LruHashMap::with_max_entries(MAX_BUCKETS, 0);
#[map]
static SCANNERS: Array<Signature> = Array::with_max_entries(MAX_SIGNATURES, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Whether the source lies in a geo-blocked network.
#[inline(always)]
pub fn geo_blocked(source: &Source) -> bool {
    match source {
        Source::V4(addr) => GEO_V4.get(Key::new(32, *addr)).is_some(),
        Source::V6(addr) => GEO_V6.get(Key::new(128, *addr)).is_some(),
    }
}

fn port_key(t: &Transport) -> PortKey {
    PortKey {
        port: t.dst_port,
        proto: t.protocol,
        pad: 0,
    }
}

/// Whether the destination port is protected and the source is not trusted for it.
#[inline(always)]
pub fn protected_denies(source: &Source, t: &Transport) -> bool {
    // SAFETY: plain lookup; the value is copied out at once.
    let Some(rule) = (unsafe { PROTECTED.get(port_key(t)) }).copied() else {
        return false;
    };
    let rule = rule.to_be_bytes();
    let trusted = match source {
        Source::V4(a) => {
            let data = [rule[0], rule[1], rule[2], rule[3], a[0], a[1], a[2], a[3]];
            TRUSTED_V4.get(Key::new(64, data)).is_some()
        }
        Source::V6(a) => {
            let mut data = [0u8; 20];
            data[..4].copy_from_slice(&rule);
            data[4..].copy_from_slice(a);
            TRUSTED_V6.get(Key::new(160, data)).is_some()
        }
    };
    !trusted
}

/// Whether the destination port carries SIP (flood limit and scanner check apply).
#[inline(always)]
pub fn is_sip(t: &Transport) -> bool {
    // SAFETY: plain lookup.
    unsafe { SIP_PORTS.get(port_key(t)) }.is_some()
}

/// The runtime settings (all off until the daemon writes them).
#[inline(always)]
pub fn settings() -> Settings {
    SETTINGS.get(0).copied().unwrap_or_default()
}

fn source_bytes(source: &Source) -> ([u8; 16], u32) {
    match source {
        Source::V4(a) => (
            [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            4,
        ),
        Source::V6(a) => (*a, 6),
    }
}

fn emit(kind: u32, source: &Source, port: u16, detail: u16) {
    let (addr, family) = source_bytes(source);
    let event = DetectionEvent {
        kind,
        family,
        addr,
        port,
        detail,
        pad: 0,
    };
    // A full ring only costs the event, never the verdict.
    let _ = EVENTS.output::<DetectionEvent>(&event, 0);
}

/// Token bucket per source: true when this packet is over the limit.
#[inline(always)]
pub fn flooding(source: &Source, t: &Transport, s: &Settings) -> bool {
    if s.flood_rate == 0 {
        return false;
    }
    let (key, _) = source_bytes(source);
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let capacity = (s.flood_burst.max(1) as u64) * 1000;
    let Some(bucket) = BUCKETS.get_ptr_mut(key) else {
        let fresh = Bucket {
            milli_tokens: capacity - 1000,
            last_ns: now,
            overruns: 0,
        };
        let _ = BUCKETS.insert(key, fresh, 0);
        return false;
    };
    // SAFETY: the pointer comes from the map and stays valid for this program run.
    let bucket = unsafe { &mut *bucket };
    let elapsed = now.saturating_sub(bucket.last_ns);
    // rate packets/s = rate * 1000 milli-tokens per 1e9 ns; after 10 s idle the bucket is full.
    let refill = if elapsed > 10_000_000_000 {
        capacity
    } else {
        elapsed * s.flood_rate as u64 / 1_000_000
    };
    bucket.milli_tokens = (bucket.milli_tokens + refill).min(capacity);
    bucket.last_ns = now;
    if bucket.milli_tokens >= 1000 {
        bucket.milli_tokens -= 1000;
        return false;
    }
    bucket.overruns += 1;
    let every = s.flood_event_every.max(1) as u64;
    if bucket.overruns % every == 0 {
        emit(EVENT_FLOOD, source, t.dst_port, 0);
    }
    true
}

/// "user-age" folded, as a little-endian word (the header name's first eight bytes).
const USER_AGE: u64 = u64::from_le_bytes(*b"user-age");

/// Bytes of payload copied for the scanner check (a power of two, so masked indexes are
/// provably inside it).
const SCRATCH_LEN: usize = 1024;
const MASK: usize = SCRATCH_LEN - 1;

/// The buffer has 16 spare bytes so that an 8-byte read at any masked index stays inside.
#[map]
static SCRATCH: PerCpuArray<[u8; SCRATCH_LEN + 16]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn byte(buf: &[u8; SCRATCH_LEN + 16], i: usize) -> u8 {
    // SAFETY: the index is masked into the buffer.
    unsafe { *buf.get_unchecked(i & MASK) }
}

#[inline(always)]
fn word(buf: &[u8; SCRATCH_LEN + 16], i: usize) -> u64 {
    // SAFETY: a masked index plus 8 stays inside SCRATCH_LEN + 16 bytes.
    unsafe { core::ptr::read_unaligned(buf.as_ptr().add(i & MASK) as *const u64) }
}

/// State shared with the header search callback.
#[repr(C)]
struct Search {
    len: u64,
    found: u64,
}

/// One step of the header search, run by `bpf_loop` (verified once, not per position):
/// does "\nUser-Agent" (any case) start at `i`?
extern "C" fn search_step(i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack `Search`.
    let search = unsafe { &mut *(ctx as *mut Search) };
    let i = i as usize;
    if i + 12 > search.len as usize {
        return 1;
    }
    let Some(buf) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: map value pointer, valid for this program run.
    let buf = unsafe { &*buf };
    if byte(buf, i) == b'\n'
        && (word(buf, i + 1) | FOLD) == USER_AGE
        && (byte(buf, i + 9) | 0x20) == b'n'
        && (byte(buf, i + 10) | 0x20) == b't'
    {
        search.found = (i + 11) as u64;
        return 1;
    }
    0
}

/// Whether the request's User-Agent starts with a known scanner's signature.
#[inline(always)]
pub fn scanner(ctx: &XdpContext, source: &Source, t: &Transport, s: &Settings) -> bool {
    if t.protocol != IPPROTO_UDP || s.signatures == 0 || t.payload == 0 {
        return false;
    }
    let total = ctx.data_end() - ctx.data();
    if total <= t.payload + 20 {
        return false;
    }
    // Copy the start of the payload into a per-CPU buffer (one helper call): scanning a map
    // value with masked indexes is far simpler for the verifier than packet pointers.
    let len = (total - t.payload).min(SCAN_WINDOW + 64);
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let n = (len & MASK) as u32;
    // A volatile round trip keeps this check in the object: the compiler can prove n > 0,
    // the verifier cannot, and the helper needs a non-zero length.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n as usize > MASK {
        return false;
    }
    // SAFETY: `buf` points to SCRATCH_LEN + 16 bytes of map value; `n` is at most 1023.
    let copied =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, t.payload as u32, buf as *mut core::ffi::c_void, n) };
    if copied != 0 {
        return false;
    }
    // SAFETY: the buffer was just filled and is only used by this CPU.
    let buf = unsafe { &*buf };
    let mut search = Search {
        len: n as u64,
        found: 0,
    };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe {
        bpf_loop(
            SCAN_WINDOW as u32,
            search_step as *mut core::ffi::c_void,
            &mut search as *mut Search as *mut core::ffi::c_void,
            0,
        );
    }
    let mut value = search.found as usize;
    if value == 0 {
        return false;
    }
    // Skip blanks and the colon.
    for _ in 0..8 {
        match byte(buf, value) {
            b' ' | b'\t' | b':' => value += 1,
            _ => break,
        }
    }
    // Past the copied bytes the buffer holds stale data: mask it out.
    let mut ua = [0u64; 4];
    for (k, w) in ua.iter_mut().enumerate() {
        let at = value + k * 8;
        let valid = (n as usize).saturating_sub(at).min(8);
        let keep = if valid >= 8 {
            u64::MAX
        } else {
            (1u64 << (valid * 8)) - 1
        };
        *w = (word(buf, at) & keep) | FOLD;
    }
    for index in 0..MAX_SIGNATURES {
        if index >= s.signatures {
            break;
        }
        let Some(sig) = SCANNERS.get(index) else {
            break;
        };
        if ua[0] & sig.mask[0] == sig.words[0]
            && ua[1] & sig.mask[1] == sig.words[1]
            && ua[2] & sig.mask[2] == sig.words[2]
            && ua[3] & sig.mask[3] == sig.words[3]
        {
            emit(EVENT_SCANNER, source, t.dst_port, index as u16);
            return true;
        }
    }
    false
}
