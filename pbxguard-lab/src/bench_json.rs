//! Benchmark numbers as one JSON file, so `cargo xtask bench --json FILE` can keep a run and
//! `--plots` can draw it: every benchmark (the xtask matcher bench and each example, each a
//! separate process run one after the other) merges its figures into the same file.
//!
//! Keys are dotted paths stored as nested objects: `xdp_ns_per_packet.banned_v4.10000` is
//! `{"xdp_ns_per_packet": {"banned_v4": {"10000": 57.0}}}`. Writes go to a temporary file
//! beside the target and are renamed over it, so a run killed mid-write leaves the previous
//! complete file, never half of one.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde_json::{Map, Value};

/// The environment variable naming the JSON file; `cargo xtask bench --json FILE` sets it
/// (to an absolute path) for every example it runs. Unset means "print only".
pub const ENV: &str = "PBXGUARD_BENCH_JSON";

/// Serialises read-modify-write cycles between threads of one process (the benchmarks run
/// one process at a time, so nothing between processes is needed).
static LOCK: Mutex<()> = Mutex::new(());

/// Records one figure under a dotted `key` when [`ENV`] names a file; does nothing otherwise,
/// so the benchmarks call it unconditionally.
///
/// # Panics
///
/// When the file cannot be read, parsed or written: a run asked to keep its numbers should
/// not end looking successful without them.
pub fn record(key: &str, value: f64) {
    record_all(&[(key, value)]);
}

/// Records several figures in one read-modify-write of the file (see [`record`]).
///
/// # Panics
///
/// As [`record`].
pub fn record_all(entries: &[(&str, f64)]) {
    if let Some(path) = target() {
        record_to(&path, entries)
            .unwrap_or_else(|e| panic!("recording benchmark results in {}: {e}", path.display()));
    }
}

/// The file [`ENV`] names, if it is set and not empty.
pub fn target() -> Option<PathBuf> {
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Merges `entries` into the JSON object file at `path` (created when missing): for callers
/// that know the file themselves, such as xtask's own matcher bench.
pub fn record_to(path: &Path, entries: &[(&str, f64)]) -> io::Result<()> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut root = match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Value::Object(Map::new()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Value::Object(Map::new()),
        Err(e) => return Err(e),
    };
    for &(key, value) in entries {
        insert(&mut root, key, value);
    }
    let mut text = serde_json::to_string_pretty(&root).map_err(io::Error::other)?;
    text.push('\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Sets the dotted `key` in `root` to `value`, creating (or replacing non-object values with)
/// the intermediate objects. Whole numbers are stored as JSON integers so counts read as
/// counts; NaN and infinities, which JSON cannot hold, become `null`.
pub fn insert(root: &mut Value, key: &str, value: f64) {
    let mut node = root;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            unreachable!("made an object above")
        };
        if parts.peek().is_none() {
            map.insert(part.to_string(), number(value));
            return;
        }
        node = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// The number at the dotted `key` of `root`, if there is one (for the plots and the docs).
pub fn get(root: &Value, key: &str) -> Option<f64> {
    key.split('.')
        .try_fold(root, |node, part| node.get(part))
        .and_then(Value::as_f64)
}

fn number(value: f64) -> Value {
    // Below 2^53 a whole f64 is an exact integer.
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_nest_and_merge() {
        let mut root = Value::Object(Map::new());
        insert(&mut root, "xdp.banned_v4.1", 57.5);
        insert(&mut root, "xdp.banned_v4.10000", 60.0);
        insert(&mut root, "matched", 50025.0);
        insert(&mut root, "bad", f64::NAN);
        assert_eq!(
            root,
            serde_json::json!({
                "xdp": {"banned_v4": {"1": 57.5, "10000": 60}},
                "matched": 50025,
                "bad": null
            })
        );
        assert_eq!(get(&root, "xdp.banned_v4.10000"), Some(60.0));
        assert_eq!(get(&root, "xdp.banned_v6.1"), None);
    }

    #[test]
    fn record_to_merges_into_an_existing_file() {
        let path = std::env::temp_dir().join(format!("bench-json-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        record_to(&path, &[("a.b", 1.0)]).unwrap();
        record_to(&path, &[("a.c", 2.5), ("d", 3.0)]).unwrap();
        let root: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(root, serde_json::json!({"a": {"b": 1, "c": 2.5}, "d": 3}));
    }
}
