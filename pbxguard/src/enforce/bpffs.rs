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

/// Where systemd mounts bpffs, and where tools (bpftool, other loaders) look for it.
pub const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

/// Whether `path` lies on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Makes `dir` a directory on bpffs. Under `/sys/fs/bpf` (the default) with nothing mounted
/// there (containers, hosts without systemd), bpffs is mounted on `/sys/fs/bpf` itself, as
/// systemd does: the directory cannot be created in sysfs. Elsewhere, a directory not on
/// bpffs gets its own bpffs mount.
pub fn ensure(dir: &Path) -> Result<(), EnforceError> {
    let pin_err = |message: String| EnforceError::Pin {
        path: dir.to_path_buf(),
        message,
    };
    if is_bpffs(dir) {
        return Ok(());
    }
    let system = Path::new(SYSTEM_BPFFS);
    if dir.starts_with(system) && !is_bpffs(system) {
        mount_bpffs(system).map_err(pin_err)?;
    }
    // Under an existing bpffs (e.g. /sys/fs/bpf/pbxguard) a plain mkdir is enough.
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
    if is_bpffs(existing) {
        return std::fs::create_dir_all(dir).map_err(|e| {
            pin_err(format!(
                "cannot create the pin directory on bpffs ({e}); create it yourself: mkdir -p {}",
                dir.display()
            ))
        });
    }
    mount_bpffs(dir).map_err(pin_err)
}

/// Creates `dir` if needed and mounts a bpffs (mode 0700, as systemd does) on it.
fn mount_bpffs(dir: &Path) -> Result<(), String> {
    let fix = format!(
        "mount it yourself: mount -t bpf -o mode=0700 bpf {}",
        dir.display()
    );
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {} ({e}); {fix}", dir.display()))?;
    mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| format!("cannot mount bpffs on {} ({e}); {fix}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "mounted bpffs for pinned XDP state");
    Ok(())
}
