//! The shared conformance vectors and fixtures (`../shared` beside the checkout).

use std::path::PathBuf;

/// The `shared/` directory: `MESH_SHARED_DIR` when set, else the first `shared/` holding
/// `vectors/signing.json` in a directory above this crate (the one beside the checkout).
///
/// # Panics
/// When there is none: a conformance test that cannot find its vectors must fail, not
/// pass.
pub fn shared_dir() -> PathBuf {
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
