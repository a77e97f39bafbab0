//! [`ConfigError`] and the mapping from a key path or byte offset back to a line of the file.

use std::{fmt, path::PathBuf};

/// A config that cannot be used, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`daemon.socket`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of a key path like `source[1].filters` in the document, if it is written there;
/// falls back to the innermost part that is.
pub(super) fn key_line(text: &str, path: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    let mut found = None;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((key, item)) = table.get_key_value(name) else {
            break;
        };
        found = key
            .span()
            .or_else(|| item.span())
            .map(|s| line_of(text, s.start));
        if let Some(index) = index {
            let Some(element) = item.as_array_of_tables().and_then(|a| a.get(index)) else {
                break;
            };
            found = element.span().map(|s| line_of(text, s.start)).or(found);
            table = element;
            continue;
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    found
}
