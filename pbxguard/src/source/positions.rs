//! Where each followed log was read up to, kept in `state_dir/positions.json` so a restarted
//! daemon reads what was written while it was down, and nothing twice.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Position in one file: which file (device + inode) and how far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file: a rotated file keeps its inode under its new name.
    pub inode: u64,
    /// Bytes consumed (up to the end of the last complete line).
    pub offset: u64,
}

/// Saved positions: files by path, journals by cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// File positions by path.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, FilePosition>,
    /// Journal cursors by source name.
    #[serde(default)]
    pub journals: BTreeMap<String, String>,
}

/// File name inside `state_dir`.
pub const FILE: &str = "positions.json";

impl Positions {
    /// Loads saved positions; a missing or unreadable file starts fresh (with a warning).
    pub fn load(state_dir: &Path) -> Positions {
        let path = state_dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "log positions unreadable; following logs from their end");
                Positions::default()
            }),
            Err(_) => Positions::default(),
        }
    }

    /// Saves atomically (temp file, fsync, rename).
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let path = state_dir.join(FILE);
        let tmp = state_dir.join(format!("{FILE}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).expect("positions serialize"))?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    }
}
