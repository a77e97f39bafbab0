//! The XDP program on crafted frames through `BPF_PROG_TEST_RUN`: the real program in the
//! kernel, no interface and no namespace. Needs root.

use aya::programs::{TestRun as _, TestRunOptions};
use pbxguard::enforce::program::{LoadOptions, XdpProgram};

/// The program with room for 1,024 bans; `force_no_scanner` loads `pbxguard_basic`.
pub fn load(force_no_scanner: bool) -> XdpProgram {
    XdpProgram::load(&LoadOptions {
        pin_dir: None,
        max_bans: 1024,
        force_no_scanner,
    })
    .expect("program loads (run as root)")
}

/// The full program (with the scanner rule where the kernel has its helpers).
pub fn program() -> XdpProgram {
    load(false)
}

/// The verdict (`XDP_PASS`, `XDP_DROP`, ...) for one frame.
pub fn run(p: &mut XdpProgram, frame: &[u8]) -> u32 {
    run_repeated(p, frame, 1)
}

/// The verdict for `frame` run `repeat` times in the kernel.
pub fn run_repeated(p: &mut XdpProgram, frame: &[u8], repeat: u32) -> u32 {
    p.xdp()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}

/// Packets counted for verdict `reason` (`banned`, `sip_scanner`, ...).
pub fn count(p: &XdpProgram, reason: &str) -> u64 {
    p.counters()
        .unwrap()
        .iter()
        .find(|r| r.reason == reason)
        .unwrap()
        .packets
}
