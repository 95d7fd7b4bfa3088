//! Generates `src/protocol/messages/` and `src/protocol/api_key.rs` from
//! Kafka's JSON message definitions.
//!
//! Usage (from the repository root):
//! `cargo run -p rskafka-codegen -- [SPEC_DIR]` (default `../shared/kafka-protocol-spec`).
//!
//! The generated code mirrors the wire semantics of Kafka's own Java
//! generator (`MessageDataGenerator`): fields exist per version, tagged
//! fields live in the tagged-field section of flexible versions, compact
//! encodings are used in flexible versions, and nullability is per version.
//! Documentation is produced mechanically; the JSON `about` strings and
//! comments are deliberately not copied.

mod emit;
mod model;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Resolves the repository root: the parent of this crate's manifest dir.
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rskafka-codegen: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let root = repo_root();
    let spec_dir = match std::env::args().nth(1) {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_absolute() || p.exists() {
                p
            } else {
                root.join(p)
            }
        }
        None => root.join("../shared/kafka-protocol-spec"),
    };
    let messages = model::load_dir(&spec_dir)?;
    let files = emit::generate(&messages)?;
    let out_dir = root.join("src/protocol/messages");
    // Regenerate from scratch so files of removed messages do not linger.
    if out_dir.exists() {
        for entry in std::fs::read_dir(&out_dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|x| x == "rs") {
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    } else {
        std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    }
    let mut written = Vec::new();
    for (rel, text) in &files {
        let path = root.join(rel);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    let status = Command::new("rustfmt")
        .arg("--edition")
        .arg("2021")
        .args(&written)
        .status()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    if !status.success() {
        return Err(format!("rustfmt failed: {status}"));
    }
    eprintln!(
        "rskafka-codegen: wrote {} files for {} message definitions",
        written.len(),
        messages.len()
    );
    Ok(())
}
