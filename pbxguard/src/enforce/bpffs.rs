//! Makes sure the pin directory is on a BPF filesystem, mounting one if needed.
//!
//! Pins are what keep the program attached and the bans in place while the daemon restarts
//! or after it crashes, so the directory must be bpffs (many hosts do not mount it).

use std::path::Path;

use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use super::EnforceError;

/// Whether `path` lies on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Creates `dir` and mounts bpffs on it unless it (or its parent mount) already is one.
pub fn ensure(dir: &Path) -> Result<(), EnforceError> {
    let pin_err = |message: String| EnforceError::Pin {
        path: dir.to_path_buf(),
        message,
    };
    // Under an existing bpffs (e.g. /sys/fs/bpf/pbxguard) a plain mkdir is enough.
    if let Some(parent) = dir.parent()
        && is_bpffs(parent)
    {
        std::fs::create_dir_all(dir).map_err(|e| pin_err(e.to_string()))?;
        return Ok(());
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| pin_err(e.to_string()))?;
    }
    if is_bpffs(dir) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| {
        pin_err(format!(
            "cannot mount bpffs there ({e}); mount it yourself: mount -t bpf bpf {}",
            dir.display()
        ))
    })?;
    tracing::info!(dir = %dir.display(), "mounted bpffs for pinned XDP state");
    Ok(())
}
