//! Shared helpers for mesh-core's integration tests.
#![allow(dead_code)]

pub(crate) use mesh_testkit::shared_dir;
use serde_json::Value;

pub(crate) fn read_json(rel: &str) -> Value {
    let path = shared_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn vectors() -> Value {
    read_json("vectors/signing.json")
}
