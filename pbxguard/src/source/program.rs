//! The XDP program as a source: its flood-overrun and scanner events (ring buffer) become
//! failures for the engine, which bans like for any log line (filters `sip-flood` and
//! `sip-scanner`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::SystemTime,
};

use aya::maps::{MapData, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pbxguard_common::{DetectionEvent, EVENT_FLOOD, EVENT_SCANNER};
use tokio::sync::mpsc::Sender;

use super::Event;
use crate::detect::{Evidence, Kind};

/// IP protocol number of TCP in [`DetectionEvent::protocol`].
const IPPROTO_TCP: u8 = 6;

/// Source index used for program events (no `[[source]]` overrides apply).
pub const PROGRAM_SOURCE: usize = usize::MAX;

/// Turns one ring-buffer record into an engine event.
pub fn to_event(raw: &DetectionEvent, signatures: &[String]) -> Option<Event> {
    let ip = match raw.family {
        4 => IpAddr::V4(Ipv4Addr::new(
            raw.addr[0],
            raw.addr[1],
            raw.addr[2],
            raw.addr[3],
        )),
        6 => IpAddr::V6(Ipv6Addr::from(raw.addr)),
        _ => return None,
    };
    let (filter, rule): (&str, String) = match raw.kind {
        EVENT_FLOOD => ("sip-flood", "over_limit".into()),
        EVENT_SCANNER => (
            "sip-scanner",
            signatures
                .get(raw.detail as usize)
                .cloned()
                .unwrap_or_else(|| "user_agent".into()),
        ),
        _ => return None,
    };
    // A flood is counted per packet, SYNs included, so it is spoofable over either protocol;
    // the program reports a TCP scanner signature only on an established connection.
    let evidence = match (raw.kind, raw.protocol) {
        (EVENT_SCANNER, IPPROTO_TCP) => Evidence::Proven,
        _ => Evidence::Spoofable,
    };
    Some(Event {
        ip,
        filter: filter.into(),
        rule: rule.into(),
        source: PROGRAM_SOURCE,
        at: SystemTime::now(),
        evidence,
        kind: Kind::Failure,
        extension: None,
    })
}

/// Reads the ring buffer until `stop`, forwarding events. Scanner signatures are named
/// from the config in force (the engine's published snapshot), so a reload that changes
/// `[scanners]` names them right at once.
pub fn spawn(
    mut ring: RingBuf<MapData>,
    snapshot: tokio::sync::watch::Receiver<Arc<crate::engine::Snapshot>>,
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("xdp-events".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let ready = {
                    let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
                    poll(&mut fds, PollTimeout::from(500u16)).unwrap_or(0)
                };
                if ready == 0 {
                    continue;
                }
                while let Some(item) = ring.next() {
                    if item.len() < std::mem::size_of::<DetectionEvent>() {
                        continue;
                    }
                    // SAFETY: the program writes whole DetectionEvents; read_unaligned copies.
                    let raw =
                        unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DetectionEvent) };
                    drop(item);
                    let config = snapshot.borrow().config.clone();
                    if let Some(event) = to_event(&raw, &config.scanners.user_agents)
                        && events.blocking_send(event).is_err()
                    {
                        return;
                    }
                }
            }
        })
        .expect("spawn xdp-events thread")
}
