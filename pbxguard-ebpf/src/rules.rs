//! The perimeter rules that follow allowlist and bans: geo blocks, trusted-only ports, the
//! per-source SIP flood limit and scanner User-Agent signatures. Each is driven by maps the
//! daemon fills at runtime, so rules change without reloading the program.

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_tuple, xdp_md},
    helpers::{
        bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_loop, bpf_sk_lookup_tcp,
        bpf_sk_release, bpf_xdp_load_bytes,
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use pbxguard_common::{
    Bucket, Counter, DetectionEvent, EVENT_FLOOD, EVENT_SCANNER, FLAG_PORT_RULES, FOLD, MAX_BLOCK,
    MAX_BUCKETS, MAX_FEEDS, MAX_GEO, MAX_PROTECTED_PORTS, MAX_SCANNER_PREFIXES, MAX_SIGNATURES,
    MAX_SIP_PORTS, MAX_TRUSTED, PortKey, SCAN_WINDOW, ScannerPrefix, Settings, Signature,
};

use crate::{
    diag,
    parse::{IPPROTO_TCP, IPPROTO_UDP, Source, Transport},
};

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
static SCANNER_PREFIXES: HashMap<ScannerPrefix, u32> =
    HashMap::with_max_entries(MAX_SCANNER_PREFIXES, 0);
#[map]
static FLAGS: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
static BLOCK_V4: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(MAX_BLOCK, 0);
#[map]
static BLOCK_V6: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(MAX_BLOCK, 0);
#[map]
static FEED_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_FEEDS, 0);

/// The feeds (bit mask) listing the source, if any.
#[inline(always)]
pub fn blocklisted(source: &Source) -> Option<u64> {
    let feeds = if source.v6 {
        BLOCK_V6.get(Key::new(128, source.addr))
    } else {
        BLOCK_V4.get(Key::new(32, source.v4()))
    };
    feeds.copied().filter(|mask| *mask != 0)
}

/// Counts a dropped packet for the first feed in `feeds`.
#[inline(always)]
pub fn count_feed(feeds: u64, bytes: u64) {
    let feed = feeds.trailing_zeros();
    if let Some(counter) = FEED_COUNTERS.get_ptr_mut(feed) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}

/// Whether the source lies in a geo-blocked network.
#[inline(always)]
pub fn geo_blocked(source: &Source) -> bool {
    if source.v6 {
        GEO_V6.get(Key::new(128, source.addr)).is_some()
    } else {
        GEO_V4.get(Key::new(32, source.v4())).is_some()
    }
}

/// Whether any rule judges packets by their destination port: then a packet whose ports
/// cannot be reached must not pass unjudged.
#[inline(always)]
pub fn port_rules_on() -> bool {
    FLAGS
        .get(0)
        .is_some_and(|flags| flags & FLAG_PORT_RULES != 0)
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
    let trusted = if source.v6 {
        let mut data = [0u8; 20];
        data[..4].copy_from_slice(&rule);
        data[4..].copy_from_slice(&source.addr);
        TRUSTED_V6.get(Key::new(160, data)).is_some()
    } else {
        let a = source.v4();
        let data = [rule[0], rule[1], rule[2], rule[3], a[0], a[1], a[2], a[3]];
        TRUSTED_V4.get(Key::new(64, data)).is_some()
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
    (source.addr, if source.v6 { 6 } else { 4 })
}

fn emit(kind: u32, source: &Source, t: &Transport, detail: u16) {
    let (addr, family) = source_bytes(source);
    let event = DetectionEvent {
        kind,
        family,
        addr,
        port: t.dst_port,
        detail,
        protocol: t.protocol,
        pad: [0; 3],
    };
    // A full ring only costs the event, never the verdict.
    if let Err(error) = EVENTS.output::<DetectionEvent>(&event, 0) {
        diag::events_lost(kind == EVENT_FLOOD, error.into());
    }
}

/// Token bucket per source: true when this packet is over the limit. `COARSE`: read the
/// coarse clock (tick resolution, enough for a bucket refilled per second, and far cheaper
/// on every SIP packet); it needs Linux 5.11, so only the full program, which needs 5.18
/// anyway, uses it.
#[inline(always)]
pub fn flooding<const COARSE: bool>(source: &Source, t: &Transport, s: &Settings) -> bool {
    if s.flood_rate == 0 {
        return false;
    }
    let (key, _) = source_bytes(source);
    // SAFETY: plain helper calls.
    let now = if COARSE {
        unsafe { bpf_ktime_get_coarse_ns() }
    } else {
        unsafe { bpf_ktime_get_boot_ns() }
    };
    let capacity = (s.flood_burst.max(1) as u64) * 1000;
    let Some(bucket) = BUCKETS.get_ptr_mut(key) else {
        let fresh = Bucket {
            milli_tokens: capacity - 1000,
            last_ns: now,
            overruns: 0,
        };
        if let Err(error) = BUCKETS.insert(key, fresh, 0) {
            diag::bucket_insert_failed(error.into());
        }
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
        emit(EVENT_FLOOD, source, t, 0);
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
    /// Where the next step looks.
    at: u64,
    found: u64,
}

/// The search state lives in a map value, not on the stack: the verifier does not follow a
/// map value's contents, so every step starts from the same verifier state and the callback
/// is verified once, where a cursor it tracked exactly would be verified step after step.
#[map]
static SEARCH: PerCpuArray<Search> = PerCpuArray::with_max_entries(1, 0);

/// '\n' in every byte, and the SWAR constants for finding it in a word.
const NEWLINES: u64 = 0x0a0a_0a0a_0a0a_0a0a;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether "\nUser-Agent" (any case) starts at `i`.
#[inline(always)]
fn user_agent_at(buf: &[u8; SCRATCH_LEN + 16], i: usize) -> bool {
    byte(buf, i) == b'\n'
        && (word(buf, i + 1) | FOLD) == USER_AGE
        && (byte(buf, i + 9) | 0x20) == b'n'
        && (byte(buf, i + 10) | 0x20) == b't'
}

/// Multiplied by `1 << 8j`, its top byte is `j`: the index of a word's lowest flagged byte.
const BYTE_INDEX: u64 = 0x0001_0203_0405_0607;

/// One step of the header search, run by `bpf_loop` (verified once, not per step): from the
/// cursor, words without a newline are skipped whole (most of a SIP header block, up to four
/// per step), and the first newline is checked for "User-Agent" (any case) and the cursor
/// moves past it. SWAR: a byte of `x` is zero where the word holds '\n'; the lowest flagged byte is a
/// real one (a borrow only runs upwards from it). One path per step, so the verifier's work
/// stays small.
extern "C" fn search_step(_: u64, _: *mut core::ffi::c_void) -> i64 {
    let Some(search) = SEARCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value, used only by this program run.
    let search = unsafe { &mut *search };
    let at = search.at as usize;
    if at >= SCAN_WINDOW || at + 12 > search.len as usize {
        return 1;
    }
    let Some(buf) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: map value pointer, valid for this program run.
    let buf = unsafe { &*buf };
    // Up to four words per step: most hold no newline.
    let mut base = at;
    let mut flags = 0;
    for _ in 0..4 {
        let x = word(buf, base) ^ NEWLINES;
        flags = x.wrapping_sub(ONES) & !x & HIGHS;
        if flags != 0 {
            break;
        }
        base += 8;
    }
    if flags == 0 {
        search.at = base as u64;
        return 0;
    }
    let lowest = (flags & flags.wrapping_neg()) >> 7;
    let i = base + (lowest.wrapping_mul(BYTE_INDEX) >> 56) as usize;
    if i >= SCAN_WINDOW || i + 12 > search.len as usize {
        return 1;
    }
    if user_agent_at(buf, i) {
        search.found = (i + 11) as u64;
        return 1;
    }
    search.at = (i + 1) as u64;
    0
}

/// Room for one `struct bpf_sock_tuple` (36 bytes, rounded up for masked indexes).
#[map]
static TUPLE: PerCpuArray<[u8; 64]> = PerCpuArray::with_max_entries(1, 0);

/// `tcp_state` value of an established connection (`BPF_TCP_ESTABLISHED`).
const TCP_ESTABLISHED: u32 = 1;

/// Whether the kernel holds an established TCP connection for this segment's four-tuple:
/// then its source completed a handshake, so the address is real, not forged.
///
/// A subprogram of its own, taking scalars only: it runs just on a TCP signature hit, so the
/// addresses are read from the packet here (IP header at `ip`) instead of being carried
/// through every packet's verdict, and its stack is its own.
#[inline(never)]
fn established(ctx: *mut xdp_md, v6: bool, ip: usize, src_port: u16, dst_port: u16) -> bool {
    // struct bpf_sock_tuple: IPv4 {saddr, daddr, sport, dport} (12 bytes) or IPv6 (36),
    // addresses and ports in network byte order, as the IP header holds the addresses;
    // built in a map value.
    let Some(tuple) = TUPLE.get_ptr_mut(0) else {
        return false;
    };
    // Source then destination address, back to back in both IP headers.
    let (from, alen, size) = if v6 {
        (ip + 8, 16, 36)
    } else {
        (ip + 12, 4, 12)
    };
    // SAFETY: the tuple is a 64-byte map value; the helper checks the packet range.
    if unsafe {
        bpf_xdp_load_bytes(
            ctx,
            from as u32,
            tuple as *mut core::ffi::c_void,
            2 * alen as u32,
        )
    } != 0
    {
        return false;
    }
    // SAFETY: per-CPU map value, used only by this program run.
    let tuple = unsafe { &mut *tuple };
    let ports = [src_port.to_be_bytes(), dst_port.to_be_bytes()];
    tuple[(2 * alen) & 63] = ports[0][0];
    tuple[(2 * alen + 1) & 63] = ports[0][1];
    tuple[(2 * alen + 2) & 63] = ports[1][0];
    tuple[(2 * alen + 3) & 63] = ports[1][1];
    // SAFETY: the tuple is a map value of 64 bytes; BPF_F_CURRENT_NETNS is -1.
    let sk: *mut bpf_sock = unsafe {
        bpf_sk_lookup_tcp(
            ctx as *mut core::ffi::c_void,
            tuple.as_mut_ptr() as *mut bpf_sock_tuple,
            size,
            u64::MAX,
            0,
        )
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: a socket the helper returned, released right after this read.
    let state = unsafe { (*sk).state };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk as *mut core::ffi::c_void) };
    state == TCP_ESTABLISHED
}

/// Whether the request's User-Agent starts with a known scanner's signature. Over UDP the
/// hit is reported as spoofable evidence; over TCP it is reported only on an established
/// connection (proven: the handshake was done), and a segment outside one is dropped
/// silently, since anyone can forge it.
#[inline(always)]
pub fn scanner(ctx: &XdpContext, source: &Source, ip: usize, t: &Transport, s: &Settings) -> bool {
    if (t.protocol != IPPROTO_UDP && t.protocol != IPPROTO_TCP)
        || s.signatures == 0
        || t.payload == 0
    {
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
        diag::load_bytes_failed(copied, t.payload as u32, n);
        return false;
    }
    // SAFETY: the buffer was just filled and is only used by this CPU.
    let buf = unsafe { &*buf };
    let Some(search) = SEARCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU map value, used only by this program run.
    unsafe {
        *search = Search {
            len: n as u64,
            at: 0,
            found: 0,
        };
    }
    // SAFETY: the callback follows bpf_loop's contract; it takes no context.
    unsafe {
        bpf_loop(
            // Each step moves the cursor forward: this many always reach the window's end.
            SCAN_WINDOW as u32,
            search_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; the callback has returned.
    let mut value = unsafe { (*search).found } as usize;
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
    // Only the signatures starting like this User-Agent; most start like none.
    let prefix = [ua[0] as u8, (ua[0] >> 8) as u8];
    // SAFETY: plain lookup; the value is copied out at once. The key goes by reference: by
    // value (as clippy suggests) the program fails verification with this toolchain.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let Some(candidates) = (unsafe { SCANNER_PREFIXES.get(&prefix) }).copied() else {
        return false;
    };
    for index in 0..MAX_SIGNATURES {
        if index >= s.signatures || candidates >> index == 0 {
            break;
        }
        if (candidates >> index) & 1 == 0 {
            continue;
        }
        let Some(sig) = SCANNERS.get(index) else {
            break;
        };
        if ua[0] & sig.mask[0] == sig.words[0]
            && ua[1] & sig.mask[1] == sig.words[1]
            && ua[2] & sig.mask[2] == sig.words[2]
            && ua[3] & sig.mask[3] == sig.words[3]
        {
            if t.protocol == IPPROTO_UDP
                || established(ctx.ctx, source.v6, ip, t.src_port, t.dst_port)
            {
                emit(EVENT_SCANNER, source, t, index as u16);
            }
            return true;
        }
    }
    false
}
