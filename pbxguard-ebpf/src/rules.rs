//! The perimeter rules that follow allowlist and bans: geo blocks, trusted-only ports, the
//! per-source SIP flood limit and scanner User-Agent signatures. Each is driven by maps the
//! daemon fills at runtime, so rules change without reloading the program.

use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_tuple},
    helpers::{
        bpf_ktime_get_boot_ns, bpf_loop, bpf_sk_lookup_tcp, bpf_sk_release, bpf_xdp_load_bytes,
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::XdpContext,
};
use pbxguard_common::{
    Bucket, Counter, DetectionEvent, EVENT_FLOOD, EVENT_SCANNER, FLAG_PORT_RULES, FOLD, MAX_BLOCK,
    MAX_BUCKETS, MAX_FEEDS, MAX_GEO, MAX_PROTECTED_PORTS, MAX_SIGNATURES, MAX_SIP_PORTS,
    MAX_TRUSTED, PortKey, SCAN_WINDOW, Settings, Signature,
};

use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Source, Transport};

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

/// Room for one `struct bpf_sock_tuple` (36 bytes, rounded up for masked indexes).
#[map]
static TUPLE: PerCpuArray<[u8; 64]> = PerCpuArray::with_max_entries(1, 0);

/// `tcp_state` value of an established connection (`BPF_TCP_ESTABLISHED`).
const TCP_ESTABLISHED: u32 = 1;

/// Whether the kernel holds an established TCP connection for this segment's four-tuple:
/// then its source completed a handshake, so the address is real, not forged.
#[inline(always)]
fn established(ctx: &XdpContext, source: &Source, dest: &[u8; 16], t: &Transport) -> bool {
    // struct bpf_sock_tuple: IPv4 {saddr, daddr, sport, dport} (12 bytes) or IPv6 (36),
    // addresses and ports in network byte order; built in a map value (the stack is full).
    let Some(tuple) = TUPLE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU map value, used only by this program run.
    let tuple = unsafe { &mut *tuple };
    let (alen, size) = if source.v6 { (16, 36) } else { (4, 12) };
    for i in 0..16 {
        if i < alen {
            tuple[i] = source.addr[i];
            tuple[alen + i] = dest[i];
        }
    }
    let ports = [t.src_port.to_be_bytes(), t.dst_port.to_be_bytes()];
    tuple[(2 * alen) & 63] = ports[0][0];
    tuple[(2 * alen + 1) & 63] = ports[0][1];
    tuple[(2 * alen + 2) & 63] = ports[1][0];
    tuple[(2 * alen + 3) & 63] = ports[1][1];
    // SAFETY: the tuple is a map value of 64 bytes; BPF_F_CURRENT_NETNS is -1.
    let sk: *mut bpf_sock = unsafe {
        bpf_sk_lookup_tcp(
            ctx.ctx as *mut core::ffi::c_void,
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
pub fn scanner(
    ctx: &XdpContext,
    source: &Source,
    dest: &[u8; 16],
    t: &Transport,
    s: &Settings,
) -> bool {
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
            if t.protocol == IPPROTO_UDP || established(ctx, source, dest, t) {
                emit(EVENT_SCANNER, source, t, index as u16);
            }
            return true;
        }
    }
    false
}
