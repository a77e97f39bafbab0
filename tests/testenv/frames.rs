//! Builders for raw Ethernet frames: fed to the XDP program with BPF_PROG_TEST_RUN, or put on
//! a lab link with [`send_raw`] as a host there would send them (valid IP and UDP checksums,
//! so the receiving kernel delivers what no rule drops).

use std::net::{Ipv4Addr, Ipv6Addr};

use pbxguard_lab::Netns;

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// A frame under construction: Ethernet header first, then whatever is pushed.
#[derive(Clone, Debug)]
pub struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(u16, u16)>,
}

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options (8 bytes of padding); the kernel accepts it only first.
    HopByHop,
    /// Destination options (8 bytes of padding).
    DestOpts,
    /// Routing header type 0 with no segments left (the kernel skips it).
    Routing,
    /// Fragment header: offset in 8-octet units, more-fragments flag.
    Fragment {
        /// Offset of this fragment's data, in 8-octet units.
        offset: u16,
        /// More fragments follow.
        more: bool,
    },
    /// Authentication header (16 bytes).
    Auth,
    /// Destination options that claim `units` 8-octet units but are cut after their first
    /// 8 bytes (a chain that runs past the packet).
    CutDestOpts {
        /// The claimed length in 8-octet units.
        units: u8,
    },
}

impl Ext {
    /// The header's protocol number.
    pub fn kind(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts | Ext::CutDestOpts { .. } => 60,
        }
    }

    /// From the protocol number (fragment: a whole datagram in one fragment).
    pub fn from_kind(kind: u8) -> Ext {
        match kind {
            0 => Ext::HopByHop,
            43 => Ext::Routing,
            44 => Ext::Fragment {
                offset: 0,
                more: false,
            },
            51 => Ext::Auth,
            60 => Ext::DestOpts,
            other => panic!("no builder for extension header {other}"),
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop | Ext::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            Ext::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            Ext::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                let [a, b] = field.to_be_bytes();
                vec![next, 0, a, b, 0, 0, 0x12, 0x34]
            }
            Ext::Auth => {
                let mut h = vec![next, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
                h.extend_from_slice(&[0; 4]);
                h
            }
            Ext::CutDestOpts { units } => vec![next, units, 1, 4, 0, 0, 0, 0],
        }
    }
}

/// The Internet checksum over `parts`, concatenated.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP datagram (header and payload) from port 40000 to `port`, with its checksum over the
/// pseudo-header `pseudo` (addresses, protocol and length).
fn udp_with(pseudo: impl Fn(u16) -> Vec<u8>, port: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut out = Vec::new();
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let sum = match checksum(&[&pseudo(len), &out]) {
        0 => 0xffff,
        s => s,
    };
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// A UDP datagram over IPv6 from `src` to `dst:port`, checksummed.
pub fn udp6_datagram(src: Ipv6Addr, dst: Ipv6Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let pseudo = |len: u16| {
        let mut p = Vec::new();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&u32::from(len).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 17]);
        p
    };
    udp_with(pseudo, port, payload)
}

fn udp4_datagram(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let pseudo = |len: u16| {
        let mut p = Vec::new();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&len.to_be_bytes());
        p
    };
    udp_with(pseudo, port, payload)
}

impl Frame {
    /// An Ethernet frame between two made-up stations, no VLAN tags yet.
    pub fn ethernet() -> Frame {
        Frame::between(SRC_MAC, DST_MAC)
    }

    /// An Ethernet frame from `src` to `dst` (e.g. two ends of a lab link).
    pub fn between(src: [u8; 6], dst: [u8; 6]) -> Frame {
        Frame {
            src_mac: src,
            dst_mac: dst,
            vlans: Vec::new(),
        }
    }

    /// Adds a VLAN tag (TPID 0x8100 for 802.1Q, 0x88a8 for an 802.1ad outer tag).
    pub fn vlan(mut self, tpid: u16, id: u16) -> Frame {
        self.vlans.push((tpid, id));
        self
    }

    fn header(&self, ethertype: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for (tpid, id) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out
    }

    /// An IPv4 packet carrying `body` as protocol `protocol`; `frag` is the flags and
    /// fragment offset field (0x4000: don't fragment).
    pub fn ipv4(
        self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        frag: u16,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = self.header(0x0800);
        let total = (20 + body.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, protocol, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(body);
        out
    }

    /// A UDP/IPv4 datagram from `src` to `dst:port`.
    pub fn udp4(self, src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
        let udp = udp4_datagram(src, dst, port, payload);
        self.ipv4(src, dst, 17, 0x4000, &udp)
    }

    /// A TCP/IPv4 segment (SYN, no payload) from `src` to `dst:port`.
    pub fn tcp4(self, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&40001u16.to_be_bytes());
        tcp.extend_from_slice(&port.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        self.ipv4(src, dst, 6, 0x4000, &tcp)
    }

    /// An IPv6 packet: the extension headers of `chain`, then `body` as protocol `next`.
    pub fn ipv6(
        self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        chain: &[Ext],
        next: u8,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = self.header(0x86DD);
        let mut headers = Vec::new();
        for (i, ext) in chain.iter().enumerate() {
            let after = chain.get(i + 1).map(|e| e.kind()).unwrap_or(next);
            headers.extend_from_slice(&ext.bytes(after));
        }
        let payload_len = (headers.len() + body.len()) as u16;
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(chain.first().map(|e| e.kind()).unwrap_or(next));
        out.push(64);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(&headers);
        out.extend_from_slice(body);
        out
    }

    /// A UDP/IPv6 datagram behind the extension headers `ext` (protocol numbers 0, 43, 44,
    /// 51, 60; 44 is a fragment header holding the whole datagram).
    pub fn udp6(
        self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        port: u16,
        ext: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let chain: Vec<Ext> = ext.iter().map(|&k| Ext::from_kind(k)).collect();
        self.ipv6(
            src,
            dst,
            &chain,
            17,
            &udp6_datagram(src, dst, port, payload),
        )
    }

    /// One UDP/IPv6 datagram as two fragments: the first carries `first` bytes of it (a
    /// multiple of 8) including the UDP header, the second the rest.
    pub fn udp6_fragments(
        self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        port: u16,
        payload: &[u8],
        first: usize,
    ) -> [Vec<u8>; 2] {
        assert_eq!(first % 8, 0, "fragment data comes in 8-octet units");
        let udp = udp6_datagram(src, dst, port, payload);
        let head = Ext::Fragment {
            offset: 0,
            more: true,
        };
        let tail = Ext::Fragment {
            offset: (first / 8) as u16,
            more: false,
        };
        [
            self.clone().ipv6(src, dst, &[head], 17, &udp[..first]),
            self.ipv6(src, dst, &[tail], 17, &udp[first..]),
        ]
    }
}

/// A SIP request as scanners send it, with `user_agent` after `filler` bytes of headers.
pub fn sip_request(user_agent: &str, filler: usize) -> Vec<u8> {
    let mut text = String::from(
        "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n",
    );
    text.push_str(&format!("X-Filler: {}\r\n", "a".repeat(filler)));
    text.push_str("From: \"sipvicious\" <sip:100@1.1.1.1>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n");
    text.push_str(&format!(
        "{user_agent}\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ));
    text.into_bytes()
}

/// Extension header chains of every length from 0 to 10 as the kernel accepts them:
/// hop-by-hop first (the only place it may be), one (atomic) fragment header (a second one
/// is refused), destination options and routing headers in turn.
pub fn ext_chains() -> Vec<Vec<Ext>> {
    (0..=10)
        .map(|n| {
            (0..n)
                .map(|i| match i {
                    0 => Ext::HopByHop,
                    3 => Ext::from_kind(44),
                    i if i % 2 == 1 => Ext::DestOpts,
                    _ => Ext::Routing,
                })
                .collect()
        })
        .collect()
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac(ns: &Netns, dev: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-j", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    let text = json[0]["address"].as_str().expect("mac address");
    let mut mac = [0u8; 6];
    for (byte, hex) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(hex, 16).unwrap();
    }
    mac
}

/// Puts `frames` on the link of `dev` in namespace `ns` through an AF_PACKET socket, exactly
/// as built: no stack on the sending side rewrites or refuses them.
pub fn send_raw(ns: &Netns, dev: &str, frames: Vec<Vec<u8>>) {
    let dev = std::ffi::CString::new(dev).unwrap();
    ns.enter(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes; the
        // address and buffers outlive each call.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let index = libc::if_nametoindex(dev.as_ptr());
            assert!(index > 0, "no interface {dev:?}");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            for frame in &frames {
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    })
}
