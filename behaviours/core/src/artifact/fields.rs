//! Reading and checking the fields of a JSON-shaped artifact, with errors that name the
//! family and the field path.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId, ParticipantId};
use crate::time::Timestamp;

/// Items of a unique string array checked by a linear scan; beyond, by a set.
const SCAN_UP_TO: usize = 16;

/// Transport names libmesh accepts where the Orbiplex schemas allow only `wss`
/// (`endpoint/transport`, `transports/supported`, `transport/profiles`,
/// `transport/profile`).
pub const TRANSPORTS: &[&str] = &["wss", "ws", "tcp", "quic"];

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this module and covered by tests.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("static pattern compiles")
}

/// `capabilities/core`, `wire/name`.
pub(crate) static WIRE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^((core|role|plugin)/[a-z0-9-]+(?:/[a-z0-9-]+)*|(sovereign|sovereign-informal)/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*|[A-Za-z0-9_-]+)$",
    )
});
/// `capability/id`.
pub(crate) static CAPABILITY_ID: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[~]?[a-z0-9][a-z0-9_/-]*(?:@(participant|node|org):did:key:z[1-9A-HJ-NP-Za-km-z]+)?$")
});
/// `capabilities/offered` in a handshake.
pub(crate) static OFFERED_CAPABILITY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(core|role|plugin)/[a-z0-9-]+(?:/[a-z0-9-]+)*$"));
/// `session/pub`: raw unpadded base64url of 32 bytes.
pub(crate) static SESSION_PUB: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9_-]{43}$"));
/// `key/storage-ref`.
pub(crate) static STORAGE_REF: LazyLock<Regex> = LazyLock::new(|| re(r"^local-file:[^\s]+$"));
/// `passport/hash`.
pub(crate) static PASSPORT_HASH: LazyLock<Regex> = LazyLock::new(|| re(r"^sha256:[A-Za-z0-9_-]+$"));
/// `doc/ref`, `schema/ref`.
pub(crate) static BLOB_REF: LazyLock<Regex> =
    LazyLock::new(|| re(r"^orbiplex:blob:sha256:[A-Za-z0-9_-]+$"));
/// `lang`.
pub(crate) static LANG: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"));

/// A view of one JSON object (the artifact or a nested object) that checks fields and
/// reports errors as `<family>: field `<path>`: <problem>`.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    family: &'static str,
    path: Path<'a>,
}

/// Where a nested view sits, kept unformatted until an error needs it (most artifacts
/// nest one level, so most views never allocate).
#[derive(Clone)]
enum Path<'a> {
    Root,
    Child(&'a str, Option<usize>),
    Deep(String),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Child(key, None) => (*key).to_owned(),
            Path::Child(key, Some(i)) => format!("{key}[{i}]"),
            Path::Deep(s) => s.clone(),
        }
    }
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, family: &'static str) -> Self {
        Fields {
            map,
            family,
            path: Path::Root,
        }
    }

    fn child(&self, map: &'a Map<String, Value>, key: &'a str, index: Option<usize>) -> Fields<'a> {
        let path = match &self.path {
            Path::Root => Path::Child(key, index),
            parent => {
                let mut p = parent.render();
                p.push('.');
                p.push_str(key);
                if let Some(i) = index {
                    p.push_str(&format!("[{i}]"));
                }
                Path::Deep(p)
            }
        };
        Fields {
            map,
            family: self.family,
            path,
        }
    }

    fn name(&self, key: &str) -> String {
        match &self.path {
            Path::Root => key.to_owned(),
            p => format!("{}.{key}", p.render()),
        }
    }

    /// An error about `key` with `code`.
    pub(crate) fn err_code(&self, code: ErrorCode, key: &str, problem: &str) -> MeshError {
        MeshError::new(
            code,
            format!("{}: field `{}`: {problem}", self.family, self.name(key)),
        )
    }

    /// An `E_PROTO_INVALID` error about `key`.
    pub(crate) fn err(&self, key: &str, problem: &str) -> MeshError {
        self.err_code(ErrorCode::ProtoInvalid, key, problem)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.map.keys()
    }

    fn get(&self, key: &str) -> MeshResult<&'a Value> {
        self.map
            .get(key)
            .ok_or_else(|| self.err(key, "required field is missing"))
    }

    /// `schema/v` must be 1: missing or not an integer is `E_PROTO_INVALID`, another
    /// number `E_PROTO_VERSION`.
    pub(crate) fn schema_v(&self) -> MeshResult<()> {
        match self.get("schema/v")?.as_u64() {
            Some(1) => Ok(()),
            Some(v) => Err(self.err_code(
                ErrorCode::ProtoVersion,
                "schema/v",
                &format!("version {v} is not supported (this node speaks 1)"),
            )),
            None => Err(self.err("schema/v", "must be the integer 1")),
        }
    }

    /// A required non-empty string.
    pub(crate) fn str(&self, key: &str) -> MeshResult<&'a str> {
        match self.get(key)? {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(self.err(key, "must not be empty")),
            _ => Err(self.err(key, "must be a string")),
        }
    }

    /// An optional non-empty string.
    pub(crate) fn opt_str(&self, key: &str) -> MeshResult<Option<&'a str>> {
        if self.has(key) {
            self.str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required string equal to `expected`.
    pub(crate) fn constant(&self, key: &str, expected: &str) -> MeshResult<()> {
        let s = self.str(key)?;
        if s == expected {
            Ok(())
        } else {
            Err(self.err(key, &format!("must be `{expected}`, got `{s}`")))
        }
    }

    /// A required string out of `allowed`.
    pub(crate) fn one_of(&self, key: &str, allowed: &[&str]) -> MeshResult<&'a str> {
        let s = self.str(key)?;
        if allowed.contains(&s) {
            Ok(s)
        } else {
            Err(self.err(key, &format!("`{s}` is not one of {allowed:?}")))
        }
    }

    /// An optional string out of `allowed`.
    pub(crate) fn opt_one_of(&self, key: &str, allowed: &[&str]) -> MeshResult<Option<&'a str>> {
        if self.has(key) {
            self.one_of(key, allowed).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required string matching `pattern`.
    pub(crate) fn matching(&self, key: &str, pattern: &Regex) -> MeshResult<&'a str> {
        let s = self.str(key)?;
        if pattern.is_match(s) {
            Ok(s)
        } else {
            Err(self.err(key, &format!("`{s}` does not match {}", pattern.as_str())))
        }
    }

    /// An optional string matching `pattern`.
    pub(crate) fn opt_matching(&self, key: &str, pattern: &Regex) -> MeshResult<Option<&'a str>> {
        if self.has(key) {
            self.matching(key, pattern).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required non-negative integer.
    pub(crate) fn u64(&self, key: &str) -> MeshResult<u64> {
        self.get(key)?
            .as_u64()
            .ok_or_else(|| self.err(key, "must be a non-negative integer"))
    }

    /// A required boolean.
    pub(crate) fn bool(&self, key: &str) -> MeshResult<bool> {
        self.get(key)?
            .as_bool()
            .ok_or_else(|| self.err(key, "must be a boolean"))
    }

    /// A required strict RFC 3339 UTC timestamp.
    pub(crate) fn timestamp(&self, key: &str) -> MeshResult<Timestamp> {
        Timestamp::parse(self.str(key)?).map_err(|e| self.err(key, &e.detail))
    }

    /// An optional timestamp.
    pub(crate) fn opt_timestamp(&self, key: &str) -> MeshResult<Option<Timestamp>> {
        if self.has(key) {
            self.timestamp(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required node id, parsed strictly.
    pub(crate) fn node_id(&self, key: &str) -> MeshResult<NodeId> {
        NodeId::parse(self.str(key)?).map_err(|e| self.err(key, &e.to_string()))
    }

    /// An optional node id.
    pub(crate) fn opt_node_id(&self, key: &str) -> MeshResult<Option<NodeId>> {
        if self.has(key) {
            self.node_id(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required participant id, parsed strictly.
    pub(crate) fn participant_id(&self, key: &str) -> MeshResult<ParticipantId> {
        ParticipantId::parse(self.str(key)?).map_err(|e| self.err(key, &e.to_string()))
    }

    /// `key/alg` = ed25519 and `key/public` naming the same key as the node id in
    /// `id_field` (already parsed). Both are canonical spellings of the same bytes when
    /// they agree, so a text comparison decides without decoding `key/public` again.
    pub(crate) fn key_matches(&self, id_field: &str) -> MeshResult<()> {
        self.one_of("key/alg", &["ed25519"])?;
        let public = self.str("key/public")?;
        let id_text = self.str(id_field)?;
        let expected = id_text
            .strip_prefix(crate::id::NODE_ID_PREFIX)
            .unwrap_or(id_text);
        if public == expected {
            return Ok(());
        }
        match KeyFingerprint::parse(public) {
            Err(e) => Err(self.err("key/public", &e.to_string())),
            Ok(_) => Err(self.err("key/public", &format!("does not match `{id_field}`"))),
        }
    }

    /// A required array.
    pub(crate) fn array(&self, key: &str, min_items: usize) -> MeshResult<&'a [Value]> {
        match self.get(key)? {
            Value::Array(a) if a.len() >= min_items => Ok(a),
            Value::Array(_) => Err(self.err(key, &format!("needs at least {min_items} item(s)"))),
            _ => Err(self.err(key, "must be an array")),
        }
    }

    /// An array of strings: at least `min_items`, optionally unique, each accepted by
    /// `check` (which returns the problem).
    pub(crate) fn strings(
        &self,
        key: &str,
        min_items: usize,
        unique: bool,
        check: impl Fn(&str) -> Option<String>,
    ) -> MeshResult<Vec<&'a str>> {
        let items = self.array(key, min_items)?;
        self.check_strings(key, items, unique, check)?;
        Ok(items.iter().filter_map(Value::as_str).collect())
    }

    /// Checks an array of strings without collecting it.
    fn check_strings(
        &self,
        key: &str,
        items: &'a [Value],
        unique: bool,
        check: impl Fn(&str) -> Option<String>,
    ) -> MeshResult<()> {
        // Arrays here are usually short (a handful of names), where a linear scan beats
        // hashing; a long one (a peer's, up to the artifact's size: 17,000 names took
        // 0.28 s to scan in a release build, before any signature) goes through a set.
        let mut seen: Option<HashSet<&str>> = None;
        for (i, item) in items.iter().enumerate() {
            let s = item
                .as_str()
                .ok_or_else(|| self.err(&format!("{key}[{i}]"), "must be a string"))?;
            if let Some(problem) = check(s) {
                return Err(self.err(&format!("{key}[{i}]"), &problem));
            }
            if !unique {
                continue;
            }
            let twice = if i < SCAN_UP_TO {
                items[..i].iter().any(|earlier| earlier.as_str() == Some(s))
            } else {
                let set = seen
                    .get_or_insert_with(|| items[..i].iter().filter_map(Value::as_str).collect());
                !set.insert(s)
            };
            if twice {
                return Err(self.err(key, &format!("`{s}` appears twice")));
            }
        }
        Ok(())
    }

    /// Like [`Fields::strings`] when only the check matters.
    pub(crate) fn check_string_array(
        &self,
        key: &str,
        min_items: usize,
        unique: bool,
        check: impl Fn(&str) -> Option<String>,
    ) -> MeshResult<()> {
        let items = self.array(key, min_items)?;
        self.check_strings(key, items, unique, check)
    }

    /// Like [`Fields::strings`] for an optional field (absent gives an empty list).
    pub(crate) fn opt_strings(
        &self,
        key: &str,
        unique: bool,
        check: impl Fn(&str) -> Option<String>,
    ) -> MeshResult<Vec<&'a str>> {
        if self.has(key) {
            self.strings(key, 0, unique, check)
        } else {
            Ok(Vec::new())
        }
    }

    /// A required object, as a nested view.
    pub(crate) fn object(&self, key: &'a str) -> MeshResult<Fields<'a>> {
        match self.get(key)? {
            Value::Object(m) => Ok(self.child(m, key, None)),
            _ => Err(self.err(key, "must be an object")),
        }
    }

    /// An optional object.
    pub(crate) fn opt_object(&self, key: &'a str) -> MeshResult<Option<Fields<'a>>> {
        if self.has(key) {
            self.object(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The `index`-th item of `items` (from `key`) as an object view.
    pub(crate) fn item(
        &self,
        key: &'a str,
        index: usize,
        item: &'a Value,
    ) -> MeshResult<Fields<'a>> {
        match item {
            Value::Object(m) => Ok(self.child(m, key, Some(index))),
            _ => Err(self.err(&format!("{key}[{index}]"), "must be an object")),
        }
    }

    /// The `signature` object: `alg` and `value` non-empty strings; `alg` restricted to
    /// `ed25519` where the family's schema says so. Its value is only decoded at
    /// verification time, so placeholder fixtures still parse.
    pub(crate) fn signature_shape(&self, ed25519_only: bool) -> MeshResult<()> {
        let sig = self.object("signature")?;
        if ed25519_only {
            sig.one_of("alg", &["ed25519"])?;
        } else {
            sig.str("alg")?;
        }
        sig.str("value")?;
        Ok(())
    }
}

/// A check for [`Fields::strings`]: the value matches `pattern`.
pub(crate) fn pattern_check(pattern: &Regex) -> impl Fn(&str) -> Option<String> + '_ {
    move |s| (!pattern.is_match(s)).then(|| format!("`{s}` does not match {}", pattern.as_str()))
}

/// A check for [`Fields::strings`]: the value is one of `allowed`.
pub(crate) fn enum_check<'b>(allowed: &'b [&'b str]) -> impl Fn(&str) -> Option<String> + 'b {
    move |s| (!allowed.contains(&s)).then(|| format!("`{s}` is not one of {allowed:?}"))
}

/// A check for [`Fields::strings`]: the value is not empty.
pub(crate) fn non_empty(s: &str) -> Option<String> {
    s.is_empty().then(|| "must not be empty".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_patterns_behave_like_the_schemas() {
        assert!(WIRE_NAME.is_match("core/messaging"));
        assert!(WIRE_NAME.is_match("sovereign/Foo_bar/x"));
        assert!(WIRE_NAME.is_match("bare-name"));
        assert!(!WIRE_NAME.is_match("core/"));
        assert!(!WIRE_NAME.is_match("core/Upper"));
        assert!(CAPABILITY_ID.is_match("core/messaging"));
        assert!(
            CAPABILITY_ID
                .is_match("~thing@node:did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
        );
        assert!(!CAPABILITY_ID.is_match("Core/messaging"));
        assert!(SESSION_PUB.is_match("TODba7hnJHAS9M5gPnOjv5r8BSUXBfLfuI31nY5NA14"));
        assert!(!SESSION_PUB.is_match("TODba7hnJHAS9M5gPnOjv5r8BSUXBfLfuI31nY5NA1"));
        assert!(STORAGE_REF.is_match("local-file:identity/node-signing-key.v1.json"));
        assert!(!STORAGE_REF.is_match("local-file:a b"));
        assert!(LANG.is_match("en-GB"));
        assert!(BLOB_REF.is_match("orbiplex:blob:sha256:abc_-1"));
        assert!(PASSPORT_HASH.is_match("sha256:abc"));
        assert!(OFFERED_CAPABILITY.is_match("role/x-y/z"));
        assert!(!OFFERED_CAPABILITY.is_match("bare"));
    }
}
