//! The XDP program's rare-path diagnostics (aya-log) reach the daemon's log: the kernel runs
//! the real program on crafted frames (BPF_PROG_TEST_RUN) until a rare path happens, the
//! `xdp-log` thread reads the record, and it comes out of a tracing subscriber set up as
//! `main.rs` sets up the daemon's (fmt + EnvFilter + tracing-log). Needs root; touches no
//! interface. Its own binary: the subscriber is global.

mod testenv;

use std::{
    io::Write,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{Mutex, Once},
    time::{Duration, Instant},
};

use pbxguard::enforce::{perimeter::Perimeter, xdp_log::TARGET};
use pbxguard_common::{MAX_V6_EXT_HEADERS, PROGRAM_NAME, PROGRAM_NAME_BASIC, PortKey, Settings};
use testenv::{
    frames::{Frame, ext_chains, sip_request, udp6_datagram},
    xdp::{count, load, run_repeated},
};

const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PBX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const STRANGER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 7);
/// More runs than the 256 KiB `EVENTS` ring holds events (40 bytes each with its header).
const OVERFILL: u32 = 8_000;

/// Everything the subscriber wrote.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The daemon's subscriber (main.rs), writing to [`LOG`], with the filter an admin sets to
/// see the program's notes: `PBXGUARD_LOG=info,pbxguard::xdp=debug`.
fn subscriber() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "info,{TARGET}=debug"
            )))
            .with_writer(|| Capture)
            .with_ansi(false)
            .init();
    });
}

/// The first log line holding every one of `parts`, waiting up to 10 s for it.
fn wait_for_line(parts: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return Some(line.to_string());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_with(part: &str) -> usize {
    String::from_utf8_lossy(&LOG.lock().unwrap())
        .lines()
        .filter(|l| l.contains(part))
        .count()
}

fn sip_perimeter(settings: Settings, signatures: &[&str]) -> Perimeter {
    Perimeter {
        protect: vec![],
        sip_ports: vec![PortKey {
            port: 5060,
            proto: 17,
            pad: 0,
        }],
        settings,
        signatures: signatures.iter().map(|s| s.to_string()).collect(),
    }
}

/// Scanner hits with nobody reading `EVENTS`: once the ring is full, events are lost, and
/// the program says so once (paced), at debug, under `pbxguard::xdp`.
#[test]
fn a_full_event_ring_is_logged_at_debug_through_tracing() {
    subscriber();
    let mut p = load(false);
    assert_eq!(p.name(), PROGRAM_NAME);
    p.set_perimeter(&sip_perimeter(
        Settings {
            flood_rate: 0,
            flood_burst: 0,
            flood_event_every: 1,
            signatures: 0,
        },
        &["friendly-scanner"],
    ))
    .unwrap();
    let frame = Frame::ethernet().udp4(
        STRANGER,
        PBX,
        5060,
        &sip_request("User-Agent: friendly-scanner", 10),
    );
    let note = "a scanner detection event was lost";
    // Room in the ring: no note.
    run_repeated(&mut p, &frame, 100);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_with(note), 0, "the ring is not full yet");

    run_repeated(&mut p, &frame, OVERFILL);
    assert_eq!(count(&p, "sip_scanner"), 100 + u64::from(OVERFILL));
    let line = wait_for_line(&[
        " DEBUG ",
        &format!("{TARGET}:"),
        "EVENTS ring buffer full",
        note,
    ])
    .unwrap_or_else(|| {
        panic!(
            "no note of the full ring in the log:\n{}",
            String::from_utf8_lossy(&LOG.lock().unwrap())
        )
    });
    eprintln!("{line}");
    assert!(line.contains("xdp-events reader is behind"), "{line}");
    // Paced: thousands lost within a second make one line per CPU, not one per event.
    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_with(note);
    assert!(
        (1..=num_cpus()).contains(&lines),
        "{lines} notes for one burst"
    );
    // The ring still holds the events that fit, unread: the daemon reads them as before.
    let mut ring = p.take_events().expect("the events ring");
    let mut held = 0;
    while ring.next().is_some() {
        held += 1;
    }
    assert!(
        held > 1000 && held < 100 + OVERFILL as usize,
        "{held} events held"
    );
}

/// The program without the scanner rule has the diagnostics too: flood events lost to a
/// full ring, and an IPv6 chain longer than the parser walks (with its source address).
#[test]
fn the_basic_program_notes_a_full_ring_and_an_overlong_ipv6_chain() {
    subscriber();
    let mut p = load(true);
    assert_eq!(p.name(), PROGRAM_NAME_BASIC);
    p.set_perimeter(&sip_perimeter(
        Settings {
            flood_rate: 1,
            flood_burst: 1,
            flood_event_every: 1,
            signatures: 0,
        },
        &[],
    ))
    .unwrap();
    let flood = Frame::ethernet().udp4(STRANGER, PBX, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    run_repeated(&mut p, &flood, OVERFILL);
    assert!(count(&p, "sip_flood") >= u64::from(OVERFILL) - 2);
    let line = wait_for_line(&[
        " DEBUG ",
        &format!("{TARGET}:"),
        "EVENTS ring buffer full",
        "a flood detection event was lost",
    ]);
    let line = line.expect("no note of the full ring from the basic program");
    eprintln!("{line}");

    let longer = &ext_chains()[MAX_V6_EXT_HEADERS + 1];
    let frame = Frame::ethernet().ipv6(
        STRANGER6,
        PBX6,
        longer,
        17,
        &udp6_datagram(STRANGER6, PBX6, 5060, b"x"),
    );
    run_repeated(&mut p, &frame, 1);
    assert_eq!(count(&p, "unclassified"), 1);
    let line = wait_for_line(&[
        " DEBUG ",
        &format!("{TARGET}:"),
        &format!(
            "IPv6 packet from {STRANGER6} has more than {MAX_V6_EXT_HEADERS} extension headers"
        ),
    ]);
    let line = line.expect("no note of the long IPv6 chain");
    eprintln!("{line}");
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
