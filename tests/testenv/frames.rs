//! Builders for the raw Ethernet frames fed to the XDP program with BPF_PROG_TEST_RUN.

use std::net::{Ipv4Addr, Ipv6Addr};

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// A frame under construction: Ethernet header first, then whatever is pushed.
pub struct Frame {
    bytes: Vec<u8>,
    vlans: Vec<(u16, u16)>,
}

impl Frame {
    /// An Ethernet frame, no VLAN tags yet.
    pub fn ethernet() -> Frame {
        Frame {
            bytes: Vec::new(),
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
        out.extend_from_slice(&DST_MAC);
        out.extend_from_slice(&SRC_MAC);
        for (tpid, id) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out
    }

    /// A UDP/IPv4 datagram from `src` to `dst:port`.
    pub fn udp4(self, src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = self.header(0x0800);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&udp(port, payload));
        let _ = self.bytes;
        out
    }

    /// A UDP/IPv6 datagram, optionally behind extension headers (each: next-header byte is
    /// filled in; `ext` lists header types 0, 43, 60 (8 bytes each) or 44 (fragment)).
    pub fn udp6(
        self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        port: u16,
        ext: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = self.header(0x86DD);
        let mut chain = Vec::new();
        for (i, &kind) in ext.iter().enumerate() {
            let next = ext.get(i + 1).copied().unwrap_or(17);
            chain.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
            let _ = kind;
        }
        let payload_len = (chain.len() + 8 + payload.len()) as u16;
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.push(ext.first().copied().unwrap_or(17));
        out.push(64);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(&chain);
        out.extend_from_slice(&udp(port, payload));
        out
    }
}

impl Frame {
    /// A TCP/IPv4 segment (SYN, no payload) from `src` to `dst:port`.
    pub fn tcp4(self, src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
        let mut out = self.header(0x0800);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&40001u16.to_be_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        out
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

fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    out
}
