//! Shared helpers for mesh-core's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;

/// The `shared/` directory that sits beside the checkout (`../shared` from the repo
/// root). `MESH_SHARED_DIR` overrides. Panics with a clear message when it is missing:
/// a conformance test that cannot find its vectors must fail, not pass.
pub(crate) fn shared_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MESH_SHARED_DIR") {
        return PathBuf::from(dir);
    }
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared");
        if candidate.join("vectors/signing.json").is_file() {
            return candidate;
        }
        assert!(
            dir.pop(),
            "shared/ with vectors/signing.json not found above {}; set MESH_SHARED_DIR",
            env!("CARGO_MANIFEST_DIR")
        );
    }
}

pub(crate) fn read_json(rel: &str) -> Value {
    let path = shared_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn vectors() -> Value {
    read_json("vectors/signing.json")
}
