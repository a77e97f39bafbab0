//! Bounds-checked, verifier-friendly parsing of Ethernet / VLAN / IPv4 / IPv6 / UDP / TCP.
//!
//! Every read is checked against `data_end`. A frame that is not IP, or too short for its IP
//! header and source address, gives `None` and is passed. Past that, the parser says whether
//! it reached the destination port: [`Upper::Unreachable`] marks the packets the port rules
//! cannot judge, which the program drops while port rules are configured.

use aya_ebpf::programs::XdpContext;
use pbxguard_common::MAX_V6_EXT_HEADERS;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// Source address in network byte order, as the LPM tries store it: IPv4 in the first four
/// bytes, zeros after. Every byte is defined on both families: the compiler may copy all 16
/// through registers, and the verifier refuses to read one never written (as an enum's
/// unused IPv4 tail would be).
#[derive(Clone, Copy)]
pub struct Source {
    pub v6: bool,
    pub addr: [u8; 16],
}

impl Source {
    /// The IPv4 address (meaningful when `!v6`).
    #[inline(always)]
    pub fn v4(&self) -> [u8; 4] {
        [self.addr[0], self.addr[1], self.addr[2], self.addr[3]]
    }
}

/// Transport protocol and ports of a TCP or UDP packet (all zero for the others).
#[derive(Default)]
pub struct Transport {
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the UDP or TCP payload from the start of the frame (0 if unknown).
    pub payload: usize,
}

/// What follows the IP header(s), as far as the port rules are concerned. Kept apart from
/// the always-initialised [`Transport`]: an enum carrying it leaves bytes undefined that the
/// compiler may copy and the verifier then refuses to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    /// TCP or UDP with readable ports.
    Ports,
    /// No ports to judge: another protocol (ICMP, ...), or a later fragment, which the
    /// kernel cannot deliver without its first fragment (that one carries the ports and is
    /// judged by them; overlapping fragments are discarded).
    NoPorts,
    /// The ports could not be reached: a longer IPv6 extension chain than the program
    /// walks, or a header chain or TCP/UDP header cut off by the end of the packet.
    Unreachable,
}

/// What the rules look at.
pub struct Packet {
    pub source: Source,
    /// Offset of the IP header in the frame: the TCP socket lookup reads both addresses
    /// there (kept out of the verdict's registers and stack until a scanner hit needs them).
    pub ip: usize,
    pub upper: Upper,
    /// Meaningful when `upper` is [`Upper::Ports`].
    pub transport: Transport,
}

/// Returns a pointer to a `T` at `offset` if the whole `T` lies inside the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked that the value lies within [data, data_end).
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Option<Packet> {
    let mut offset = ETH_HLEN;
    let mut ethertype = read_be16(ctx, 12)?;
    // Up to two VLAN tags (802.1Q, or QinQ with an 802.1ad outer tag).
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = read_be16(ctx, offset + 2)?;
        offset += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = read_be16(ctx, offset + 2)?;
            offset += VLAN_HLEN;
        }
    }
    match ethertype {
        ETH_P_IPV4 => parse_v4(ctx, offset),
        ETH_P_IPV6 => parse_v6(ctx, offset),
        _ => None,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, offset: usize) -> Option<Packet> {
    let version_ihl: u8 = read(ctx, offset)?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if header_len < 20 {
        return None;
    }
    let frag: u16 = read_be16(ctx, offset + 6)?;
    let protocol: u8 = read(ctx, offset + 9)?;
    let source: [u8; 4] = read(ctx, offset + 12)?;
    // The whole header, destination address included, lies inside the packet.
    ptr_at::<[u8; 4]>(ctx, offset + 16)?;
    // Only the first fragment carries the transport header.
    let (upper, transport) = if frag & 0x1fff == 0 {
        upper(ctx, protocol, offset + header_len)
    } else {
        (Upper::NoPorts, Transport::default())
    };
    Some(Packet {
        source: Source {
            v6: false,
            addr: [
                source[0], source[1], source[2], source[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        },
        ip: offset,
        upper,
        transport,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, offset: usize) -> Option<Packet> {
    let version: u8 = read(ctx, offset)?;
    if version >> 4 != 6 {
        return None;
    }
    let mut next: u8 = read(ctx, offset + 6)?;
    let source: [u8; 16] = read(ctx, offset + 8)?;
    // The whole header, destination address included, lies inside the packet.
    ptr_at::<[u8; 16]>(ctx, offset + 24)?;
    let mut at = offset + 40;
    let v6 = |(upper, transport)| {
        Some(Packet {
            source: Source {
                v6: true,
                addr: source,
            },
            ip: offset,
            upper,
            transport,
        })
    };
    let without = |upper| (upper, Transport::default());
    // The headers Linux itself walks before the upper-layer protocol; anything else is that
    // protocol.
    for _ in 0..MAX_V6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, minus one.
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some(hdr) = read::<[u8; 2]>(ctx, at) else {
                    return v6(without(Upper::Unreachable));
                };
                next = hdr[0];
                at += (hdr[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the ports.
            IPPROTO_FRAGMENT => {
                let Some(hdr) = read::<[u8; 4]>(ctx, at) else {
                    return v6(without(Upper::Unreachable));
                };
                if u16::from_be_bytes([hdr[2], hdr[3]]) & 0xfff8 != 0 {
                    return v6(without(Upper::NoPorts));
                }
                next = hdr[0];
                at += 8;
            }
            // Authentication header: length in 4-octet units, minus two.
            IPPROTO_AH => {
                let Some(hdr) = read::<[u8; 2]>(ctx, at) else {
                    return v6(without(Upper::Unreachable));
                };
                next = hdr[0];
                at += (hdr[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    match next {
        // Still inside the chain after the last step walked: no RFC 8200 chain is this
        // long, so this is worth a (paced, debug) note; a chain cut short above is not.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH => {
            crate::diag::v6_chain_too_long(&source, MAX_V6_EXT_HEADERS as u32);
            v6(without(Upper::Unreachable))
        }
        protocol => v6(upper(ctx, protocol, at)),
    }
}

/// The ports of a TCP or UDP header at `at`; other protocols have none.
#[inline(always)]
fn upper(ctx: &XdpContext, protocol: u8, at: usize) -> (Upper, Transport) {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return (Upper::NoPorts, Transport::default());
    }
    match read::<[u8; 4]>(ctx, at) {
        Some(ports) => (
            Upper::Ports,
            Transport {
                protocol,
                src_port: u16::from_be_bytes([ports[0], ports[1]]),
                dst_port: u16::from_be_bytes([ports[2], ports[3]]),
                payload: if protocol == IPPROTO_UDP {
                    at + 8
                } else {
                    // TCP: the data offset (header length in 32-bit words, at least 5).
                    match read::<u8>(ctx, at + 12) {
                        Some(off) if off >> 4 >= 5 => at + (off >> 4) as usize * 4,
                        _ => 0,
                    }
                },
            },
        ),
        None => (Upper::Unreachable, Transport::default()),
    }
}
