//! Running `nft`: one JSON batch in (atomic in the kernel), or a listing out. nft's own
//! error text is kept, so the admin reads "interval overlaps" or "set is full", not a guess.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::enforce::EnforceError;

/// Runs `nft -j -f -` with `commands` as one transaction.
pub fn apply(commands: Vec<Value>) -> Result<(), EnforceError> {
    if commands.is_empty() {
        return Ok(());
    }
    let payload = json!({ "nftables": commands }).to_string();
    tracing::trace!(%payload, "nft batch");
    run(&["-j", "-f", "-"], Some(payload.as_bytes())).map(drop)
}

/// `nft -j <args>` as JSON objects.
pub fn list(args: &[&str]) -> Result<Vec<Value>, EnforceError> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let raw = run(&full, None)?;
    let value: Value = serde_json::from_str(&raw)
        .map_err(|e| EnforceError::Nft(format!("unreadable `nft -j` output: {e}")))?;
    Ok(value["nftables"].as_array().cloned().unwrap_or_default())
}

fn run(args: &[&str], input: Option<&[u8]>) -> Result<String, EnforceError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EnforceError::NftMissing(e.to_string()))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .map_err(|e| EnforceError::NftMissing(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| EnforceError::NftMissing(e.to_string()))?;
    if !output.status.success() {
        return Err(EnforceError::Nft(nft_message(&String::from_utf8_lossy(
            &output.stderr,
        ))));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// nft's error lines, without the echo of the (possibly huge) JSON batch.
fn nft_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Error:") || l.starts_with("Warning:"))
        .collect();
    let text = if lines.is_empty() {
        stderr.trim().chars().take(400).collect()
    } else {
        lines.join("; ")
    };
    if text.is_empty() {
        "nft failed without a message".into()
    } else {
        text
    }
}

/// Whether nft refused because a set reached its `size`.
pub fn is_full(e: &EnforceError) -> bool {
    matches!(e, EnforceError::Nft(m) if m.contains("Too many open files"))
}

/// Whether nft refused because an element to delete was already gone (timed out).
pub fn is_missing_element(e: &EnforceError) -> bool {
    matches!(e, EnforceError::Nft(m) if m.contains("does not exist") || m.contains("No such file or directory"))
}
