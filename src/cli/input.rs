//! Reading a payload from a file or stdin, size-capped.

use std::io::Read;
use std::path::Path;

use mesh_core::{MAX_ARTIFACT_BYTES, MeshError};

/// Reads `FILE` or `-` (stdin), at most [`MAX_ARTIFACT_BYTES`]; more is `E_PROTO_INVALID`.
pub(crate) fn read_payload(source: &str) -> anyhow::Result<String> {
    let cap = MAX_ARTIFACT_BYTES as u64 + 1;
    let mut buf = Vec::new();
    if source == "-" {
        std::io::stdin().take(cap).read_to_end(&mut buf)?;
    } else {
        let path = Path::new(source);
        std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
            .take(cap)
            .read_to_end(&mut buf)?;
    }
    if buf.len() > MAX_ARTIFACT_BYTES {
        return Err(MeshError::invalid(format!(
            "input larger than the {MAX_ARTIFACT_BYTES}-byte artifact cap"
        ))
        .into());
    }
    String::from_utf8(buf).map_err(|_| MeshError::invalid("input is not UTF-8").into())
}
