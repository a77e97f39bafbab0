//! Bounds-checked, verifier-friendly parsing of Ethernet / VLAN / IPv4 / IPv6 / UDP / TCP.
//!
//! Every read is checked against `data_end`; any failure returns `None` and the caller
//! passes the frame. The source address is the only thing a verdict needs so far; the ports
//! are parsed for the rules that protect specific services.

use aya_ebpf::programs::XdpContext;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// Most IPv6 extension headers we walk before giving up on finding the transport header.
const MAX_V6_EXT_HEADERS: usize = 6;

/// Source address in network byte order, as the LPM tries store it.
pub enum Source {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// Transport protocol and ports, when the packet carries a readable transport header.
pub struct Transport {
    pub protocol: u8,
    #[allow(dead_code)] // parsed with the rest; no rule needs it yet
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the UDP payload from the start of the frame (0 for TCP).
    pub payload: usize,
}

/// What the rules look at.
pub struct Packet {
    pub source: Source,
    pub transport: Option<Transport>,
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
    // Only the first fragment carries the transport header.
    let transport = if frag & 0x1fff == 0 {
        transport(ctx, protocol, offset + header_len)
    } else {
        None
    };
    Some(Packet {
        source: Source::V4(source),
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
    let mut at = offset + 40;
    let mut transport_header = None;
    for _ in 0..MAX_V6_EXT_HEADERS {
        match next {
            IPPROTO_TCP | IPPROTO_UDP => {
                transport_header = transport(ctx, next, at);
                break;
            }
            // Hop-by-hop, routing, destination options: length in 8-octet units, minus one.
            0 | 43 | 60 => {
                let hdr: [u8; 2] = match read(ctx, at) {
                    Some(h) => h,
                    None => break,
                };
                next = hdr[0];
                at += (hdr[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the ports.
            44 => {
                let hdr: [u8; 4] = match read(ctx, at) {
                    Some(h) => h,
                    None => break,
                };
                if u16::from_be_bytes([hdr[2], hdr[3]]) & 0xfff8 != 0 {
                    break;
                }
                next = hdr[0];
                at += 8;
            }
            // Authentication header: length in 4-octet units, minus two.
            51 => {
                let hdr: [u8; 2] = match read(ctx, at) {
                    Some(h) => h,
                    None => break,
                };
                next = hdr[0];
                at += (hdr[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    Some(Packet {
        source: Source::V6(source),
        transport: transport_header,
    })
}

#[inline(always)]
fn transport(ctx: &XdpContext, protocol: u8, at: usize) -> Option<Transport> {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    Some(Transport {
        protocol,
        src_port: read_be16(ctx, at)?,
        dst_port: read_be16(ctx, at + 2)?,
        payload: if protocol == IPPROTO_UDP { at + 8 } else { 0 },
    })
}
