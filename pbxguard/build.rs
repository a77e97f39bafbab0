//! Builds the XDP program (crate `pbxguard-ebpf`) with the nightly toolchain and
//! bpf-linker, so the daemon can embed the object with `include_bytes!`.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "pbxguard-ebpf")
        .ok_or_else(|| anyhow!("pbxguard-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // aya-build replays the inner cargo's progress lines as build warnings; keep it quiet
    // so a build shows only real errors.
    // SAFETY: the build script is single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the XDP program failed; run `cargo xtask setup` first (needs nightly rust-src and bpf-linker)")
}
