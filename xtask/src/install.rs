//! `cargo xtask install`: puts the binary, the systemd unit and (only if absent) the
//! example config in place, so an admin's edited config is never overwritten.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// What was installed where (relative to `destdir`).
pub struct Installed {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files left alone because the admin already has them.
    pub kept: Vec<PathBuf>,
}

/// Installs under `destdir` (`/` for the real system).
pub fn install(bin: &Path, root: &Path, destdir: &Path) -> anyhow::Result<Installed> {
    let mut done = Installed {
        written: Vec::new(),
        kept: Vec::new(),
    };
    let files = [
        (bin.to_path_buf(), "usr/sbin/pbxguard", 0o755, true),
        (
            root.join("systemd/pbxguard.service"),
            "etc/systemd/system/pbxguard.service",
            0o644,
            true,
        ),
        (
            root.join("config/pbxguard.toml"),
            "etc/pbxguard/pbxguard.toml",
            0o600,
            false,
        ),
    ];
    for (from, to, mode, overwrite) in files {
        let target = destdir.join(to);
        if !overwrite && target.exists() {
            done.kept.push(target);
            continue;
        }
        let dir = target.parent().expect("install paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Copy to a temp name and rename: replacing a running binary in place fails (ETXTBSY).
        let tmp = target.with_extension("xtask-new");
        std::fs::copy(&from, &tmp)
            .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        std::fs::rename(&tmp, &target)?;
        done.written.push(target);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_never_overwrites_the_admins_config() {
        let dest =
            std::env::temp_dir().join(format!("pbxguard-install-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dest);
        let root = crate::root();
        let fake_bin = dest.join("pbxguard-bin");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(&fake_bin, b"binary").unwrap();

        let first = install(&fake_bin, &root, &dest).unwrap();
        assert_eq!(first.written.len(), 3);
        let config = dest.join("etc/pbxguard/pbxguard.toml");
        std::fs::write(&config, "# edited by the admin\n").unwrap();

        let second = install(&fake_bin, &root, &dest).unwrap();
        assert_eq!(second.kept, vec![config.clone()]);
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "# edited by the admin\n"
        );
        assert!(dest.join("etc/systemd/system/pbxguard.service").exists());
        assert_eq!(
            std::fs::read(dest.join("usr/sbin/pbxguard")).unwrap(),
            b"binary"
        );
        std::fs::remove_dir_all(&dest).unwrap();
    }
}
