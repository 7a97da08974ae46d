//! The node identity on disk: load-or-generate, import, export.
//!
//! Two files under the data dir:
//! - `identity/node-identity.v1.json`: the public `node-identity.v1` record;
//! - `identity/node-signing-key.v1.json`: the secret (mode 0600), referenced by the
//!   record's `key/storage-ref` and never inline in it.
//!
//! Loading never invents a new identity when something is wrong: a damaged, foreign or
//! mismatched file is an error that names the file, and the file is left as it was.

mod atomic;

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::artifact::Artifact;
use crate::error::{ErrorCode, MeshError};
use crate::families::NodeIdentityRecord;
use crate::id::KeyFingerprint;
use crate::keypair::NodeKeypair;
use crate::time::Timestamp;

/// The record's path relative to the data dir.
pub const RECORD_FILE: &str = "identity/node-identity.v1.json";
/// The secret's path relative to the data dir.
pub const SECRET_FILE: &str = "identity/node-signing-key.v1.json";
/// The lock file that serialises writers of the identity, relative to the data dir.
const LOCK_FILE: &str = "identity/.lock";
/// The `kind` of the secret file.
pub const SECRET_KIND: &str = "node-signing-key.v1";
/// Largest identity file read (they are a few hundred bytes).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why the identity could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file exists but its content is not a valid identity file.
    #[error("{}: damaged identity file: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The record and the secret name different keys.
    #[error("{} names key {record_key} but the secret in {} is for key {secret_key}", record.display(), secret.display())]
    Mismatch {
        /// The record file.
        record: PathBuf,
        /// The secret file.
        secret: PathBuf,
        /// Key in the record.
        record_key: String,
        /// Key of the secret.
        secret_key: String,
    },
    /// The secret file can be read by others.
    #[error("{}: permissions {mode:o} are too open for a secret key; run `chmod 600` on it", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// An identity exists and the operation would replace it.
    #[error(
        "an identity already exists ({node_id}); pass --force to replace it (the old files are kept as backups)"
    )]
    Exists {
        /// The existing node id.
        node_id: String,
    },
    /// Imported material is invalid.
    #[error("invalid import: {0}")]
    InvalidImport(String),
}

impl IdentityError {
    /// The frozen code for this error, when it is a rejection of content.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            IdentityError::Io { .. } | IdentityError::Permissions { .. } => None,
            IdentityError::Damaged { .. }
            | IdentityError::Mismatch { .. }
            | IdentityError::Exists { .. }
            | IdentityError::InvalidImport(_) => Some(ErrorCode::ProtoInvalid),
        }
    }

    fn damaged(path: &Path, reason: impl Into<String>) -> Self {
        IdentityError::Damaged {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A loaded identity.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The public record.
    pub record: NodeIdentityRecord,
    /// The key.
    pub keypair: NodeKeypair,
    /// Whether this call created the identity (trace `identity/generated`) or loaded it
    /// (`identity/loaded`).
    pub generated: bool,
}

/// The identity files of one data dir.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    data_dir: PathBuf,
}

impl IdentityStore {
    /// The store under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        IdentityStore {
            data_dir: data_dir.into(),
        }
    }

    /// The record file.
    pub fn record_path(&self) -> PathBuf {
        self.data_dir.join(RECORD_FILE)
    }

    /// The default secret file.
    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join(SECRET_FILE)
    }

    /// Loads the identity; `Ok(None)` when there is none at all (neither file exists).
    pub fn load(&self) -> Result<Option<NodeIdentity>, IdentityError> {
        let record_path = self.record_path();
        let record = match read_small(&record_path)? {
            Some(text) => Some(parse_record(&record_path, &text)?),
            None => None,
        };
        let secret_path = match &record {
            Some(r) => self.resolve_storage_ref(&record_path, r.storage_ref())?,
            None => self.secret_path(),
        };
        let secret = match read_secret_file(&secret_path)? {
            Some(kp) => kp,
            None if record.is_some() => {
                return Err(IdentityError::Io {
                    path: secret_path,
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "the secret key referenced by {} is missing",
                            record_path.display()
                        ),
                    ),
                });
            }
            None => return Ok(None),
        };
        let record = match record {
            Some(r) => r,
            None => {
                // The secret was written but the record was not (a crash between the two
                // writes of `generate`): the record is public data derived from the key,
                // so rebuild it. This is the same identity, not a new one.
                tracing::warn!(path = %record_path.display(), "identity record missing; rebuilding it from the secret key");
                let r = NodeIdentityRecord::new(secret.node_id(), &Timestamp::now());
                self.write_record(&r)?;
                r
            }
        };
        if record.fingerprint() != &secret.fingerprint() {
            return Err(IdentityError::Mismatch {
                record: record_path,
                secret: secret_path,
                record_key: record.fingerprint().to_string(),
                secret_key: secret.fingerprint().to_string(),
            });
        }
        Ok(Some(NodeIdentity {
            record,
            keypair: secret,
            generated: false,
        }))
    }

    /// Loads the identity, or generates and stores a new one when there is none.
    pub fn load_or_generate(&self, now: &Timestamp) -> Result<NodeIdentity, IdentityError> {
        let _lock = self.lock()?;
        if let Some(id) = self.load()? {
            return Ok(id);
        }
        self.store(NodeKeypair::generate(), now)
    }

    /// Takes the identity directory's lock (`identity/.lock`, exclusive, waited for),
    /// held until the file is dropped: what decides on and writes the identity runs one
    /// at a time, across processes. Two first starts on an empty data directory (a
    /// service and `meshd identity init`, say) each generated a key, and the last writer
    /// of each file won: a record of one key beside the secret of the other.
    fn lock(&self) -> Result<fs::File, IdentityError> {
        let path = self.data_dir.join(LOCK_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    /// Makes `secret` the node's key. When an identity with the same key exists it is
    /// returned unchanged; another identity is only replaced with `force`, and then its
    /// files are kept as `*.replaced-<unix time>` backups (`…-<n>` for a second one in
    /// the same second).
    pub fn import(
        &self,
        secret: &[u8; 32],
        now: &Timestamp,
        force: bool,
    ) -> Result<NodeIdentity, IdentityError> {
        let keypair = NodeKeypair::from_secret_bytes(secret);
        let _lock = self.lock()?;
        let existing = match self.load() {
            Ok(existing) => existing,
            // A broken identity can only be replaced on purpose.
            Err(e) if !force => return Err(e),
            Err(_) => None,
        };
        if let Some(existing) = existing {
            if existing.keypair.fingerprint() == keypair.fingerprint() {
                return Ok(existing);
            }
            if !force {
                return Err(IdentityError::Exists {
                    node_id: existing.record.node_id().to_string(),
                });
            }
        }
        if force {
            self.back_up(now)?;
        }
        self.store(keypair, now)
    }

    /// The public record, validated (what `meshd identity export` prints).
    pub fn export(&self) -> Result<NodeIdentityRecord, IdentityError> {
        match self.load()? {
            Some(id) => Ok(id.record),
            None => Err(IdentityError::Io {
                path: self.record_path(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "no identity yet; run `meshd identity init`",
                ),
            }),
        }
    }

    fn store(&self, keypair: NodeKeypair, now: &Timestamp) -> Result<NodeIdentity, IdentityError> {
        let secret_path = self.secret_path();
        let secret_doc = Zeroizing::new(
            serde_json::to_string_pretty(&json!({
                "schema/v": 1,
                "kind": SECRET_KIND,
                "key/alg": "ed25519",
                "key/public": keypair.fingerprint().to_string(),
                "key/secret-hex": hex::encode(*keypair.secret_bytes()),
            }))
            .unwrap_or_default(),
        );
        atomic::write_atomic(&secret_path, secret_doc.as_bytes(), true).map_err(|source| {
            IdentityError::Io {
                path: secret_path,
                source,
            }
        })?;
        let record = NodeIdentityRecord::new(keypair.node_id(), now);
        self.write_record(&record)?;
        Ok(NodeIdentity {
            record,
            keypair,
            generated: true,
        })
    }

    fn write_record(&self, record: &NodeIdentityRecord) -> Result<(), IdentityError> {
        let path = self.record_path();
        let mut text = serde_json::to_string_pretty(&record.to_json()).unwrap_or_default();
        text.push('\n');
        atomic::write_atomic(&path, text.as_bytes(), false)
            .map_err(|source| IdentityError::Io { path, source })
    }

    /// Moves the identity's files to `*.replaced-<unix time>` backups (`…-<n>` when a
    /// backup of that second exists): never over an earlier backup. Two forced imports
    /// in one second renamed the second's files over the first's backups, and the
    /// original secret was gone.
    fn back_up(&self, now: &Timestamp) -> Result<(), IdentityError> {
        let stamp = now.instant().timestamp();
        let paths = [self.record_path(), self.secret_path()];
        let backup_of = |path: &Path, n: u32| match n {
            0 => path.with_extension(format!("json.replaced-{stamp}")),
            n => path.with_extension(format!("json.replaced-{stamp}-{n}")),
        };
        let n = (0..1000)
            .find(|n| paths.iter().all(|p| !backup_of(p, *n).exists()))
            .ok_or_else(|| IdentityError::Io {
                path: paths[1].clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a thousand backups of this second exist",
                ),
            })?;
        for path in paths {
            if path.exists() {
                // A link fails where a backup appeared meanwhile; a rename would replace it.
                // Where the file system has no hard links (FAT, some network mounts), a
                // rename to the name found free.
                let io = |source| IdentityError::Io {
                    path: path.clone(),
                    source,
                };
                let backup = backup_of(&path, n);
                match fs::hard_link(&path, &backup) {
                    Ok(()) => fs::remove_file(&path).map_err(io)?,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(io(e)),
                    Err(_) => fs::rename(&path, &backup).map_err(io)?,
                }
            }
        }
        Ok(())
    }

    /// `local-file:<relative path>` resolved under the data dir; absolute paths and `..`
    /// are refused so a record cannot point the node at an arbitrary file.
    fn resolve_storage_ref(
        &self,
        record_path: &Path,
        storage_ref: &str,
    ) -> Result<PathBuf, IdentityError> {
        let rel = Path::new(storage_ref.trim_start_matches("local-file:"));
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(IdentityError::damaged(
                record_path,
                format!(
                    "key/storage-ref `{storage_ref}` must be a relative path inside the data dir"
                ),
            ));
        }
        Ok(self.data_dir.join(rel))
    }
}

/// Reads a secret key from a file for import: 64 hex characters (whitespace around them
/// is ignored) or a `node-signing-key.v1` JSON file.
pub fn read_secret_for_import(path: &Path) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let text = read_small(path)?.ok_or_else(|| IdentityError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
    })?;
    secret_from_text(path, &text)
}

/// The secret in `text`, 64 hex characters or a `node-signing-key.v1` document, read
/// from `origin` (named in errors; standard input for `meshd identity import
/// --secret-key-file -`).
pub fn secret_from_text(origin: &Path, text: &str) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let kp = parse_secret(origin, trimmed)?;
        return Ok(kp.secret_bytes());
    }
    parse_secret_hex(trimmed).map_err(|reason| IdentityError::damaged(origin, reason))
}

/// Parses 64 hex characters into a 32-byte secret.
pub fn parse_secret_hex(text: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, out.as_mut_slice())
        .map_err(|_| "a secret key is exactly 64 hex characters (32 bytes)".to_owned())?;
    Ok(out)
}

fn read_small(path: &Path) -> Result<Option<Zeroizing<String>>, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.is_file() {
        return Err(IdentityError::damaged(path, "not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(IdentityError::damaged(
            path,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let bytes = crate::read_file_capped(path, MAX_FILE_BYTES).map_err(io_err)?;
    String::from_utf8(bytes)
        .map(|s| Some(Zeroizing::new(s)))
        .map_err(|_| IdentityError::damaged(path, "not UTF-8 text"))
}

fn parse_record(path: &Path, text: &str) -> Result<NodeIdentityRecord, IdentityError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| IdentityError::damaged(path, format!("not JSON: {e}")))?;
    NodeIdentityRecord::from_json(value)
        .map_err(|e: MeshError| IdentityError::damaged(path, e.detail))
}

fn read_secret_file(path: &Path) -> Result<Option<NodeKeypair>, IdentityError> {
    let Some(text) = read_small(path)? else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|source| IdentityError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    parse_secret(path, &text).map(Some)
}

fn parse_secret(path: &Path, text: &str) -> Result<NodeKeypair, IdentityError> {
    // The parse error is not echoed: it could quote secret material.
    let value: Value =
        serde_json::from_str(text).map_err(|_| IdentityError::damaged(path, "not JSON"))?;
    let field = |k: &str| value.get(k).and_then(Value::as_str);
    if value.get("schema/v").and_then(Value::as_u64) != Some(1)
        || field("kind") != Some(SECRET_KIND)
    {
        return Err(IdentityError::damaged(
            path,
            format!("not a {SECRET_KIND} file (schema/v 1)"),
        ));
    }
    if field("key/alg") != Some("ed25519") {
        return Err(IdentityError::damaged(path, "key/alg must be ed25519"));
    }
    let secret = field("key/secret-hex")
        .ok_or_else(|| IdentityError::damaged(path, "key/secret-hex is missing"))
        .and_then(|h| parse_secret_hex(h).map_err(|r| IdentityError::damaged(path, r)))?;
    let keypair = NodeKeypair::from_secret_bytes(&secret);
    let stated = field("key/public")
        .ok_or_else(|| IdentityError::damaged(path, "key/public is missing"))
        .and_then(|p| {
            KeyFingerprint::parse(p).map_err(|e| IdentityError::damaged(path, e.to_string()))
        })?;
    if stated != keypair.fingerprint() {
        return Err(IdentityError::damaged(
            path,
            "key/public does not match the secret key (corrupted or edited file)",
        ));
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2026-03-23T18:05:00Z").unwrap()
    }

    #[test]
    fn generate_then_load_is_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let first = store.load_or_generate(&now()).unwrap();
        assert!(first.generated);
        let again = store.load_or_generate(&now()).unwrap();
        assert!(!again.generated);
        assert_eq!(again.record, first.record);
        assert_eq!(again.keypair.fingerprint(), first.keypair.fingerprint());
        // No temp files left behind (the two files and the lock file).
        let names: Vec<String> = fs::read_dir(dir.path().join("identity"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn crash_between_secret_and_record_keeps_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        let first = store.load_or_generate(&now()).unwrap();
        // Simulate a crash after the secret was written and before the record was.
        fs::remove_file(store.record_path()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.record.node_id(), first.record.node_id());
        assert!(store.record_path().exists(), "the record is rebuilt");
    }

    #[test]
    fn storage_ref_cannot_escape_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        store.load_or_generate(&now()).unwrap();
        let path = store.record_path();
        let mut record: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        for bad in ["local-file:../../etc/passwd", "local-file:/etc/passwd"] {
            record["key/storage-ref"] = bad.into();
            fs::write(&path, record.to_string()).unwrap();
            let err = store.load().unwrap_err();
            assert!(matches!(err, IdentityError::Damaged { .. }), "{bad}: {err}");
            assert_eq!(err.code(), Some(ErrorCode::ProtoInvalid));
        }
    }

    #[test]
    fn import_keeps_backups_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        let first = store.load_or_generate(&now()).unwrap();
        let other = [7u8; 32];
        assert!(matches!(
            store.import(&other, &now(), false),
            Err(IdentityError::Exists { .. })
        ));
        let replaced = store.import(&other, &now(), true).unwrap();
        assert_ne!(replaced.record.node_id(), first.record.node_id());
        let backup = store
            .secret_path()
            .with_extension(format!("json.replaced-{}", now().instant().timestamp()));
        assert!(backup.exists());

        let hex_file = dir.path().join("secret.hex");
        fs::write(&hex_file, format!("  {}\n", hex::encode([7u8; 32]))).unwrap();
        assert_eq!(*read_secret_for_import(&hex_file).unwrap(), [7u8; 32]);
        fs::write(&hex_file, "not hex").unwrap();
        assert!(matches!(
            read_secret_for_import(&hex_file),
            Err(IdentityError::Damaged { .. })
        ));
        // The node's own secret file is importable as is.
        assert_eq!(
            *read_secret_for_import(&store.secret_path()).unwrap(),
            [7u8; 32]
        );
    }

    #[test]
    fn first_starts_at_once_agree_on_one_identity() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let ids: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let store = IdentityStore::new(dir.path());
                        s.spawn(move || {
                            store
                                .load_or_generate(&now())
                                .map(|id| id.record.node_id().to_string())
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().unwrap_or_else(|e| panic!("{e}")))
                    .collect()
            });
            assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
            let loaded = IdentityStore::new(dir.path()).load().unwrap().unwrap();
            assert_eq!(loaded.record.node_id().to_string(), ids[0]);
        }
    }

    #[test]
    fn forced_imports_in_one_second_keep_the_first_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        let t = now();
        let first = store.load_or_generate(&t).unwrap();
        let original = fs::read(store.secret_path()).unwrap();
        store.import(&[1u8; 32], &t, true).unwrap();
        store.import(&[2u8; 32], &t, true).unwrap();
        let backups: Vec<Vec<u8>> = fs::read_dir(store.secret_path().parent().unwrap())
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name()?.to_str()?.to_owned();
                (name.starts_with("node-signing-key") && name.contains("replaced-"))
                    .then(|| fs::read(&p).unwrap())
            })
            .collect();
        assert_eq!(backups.len(), 2, "one backup per forced import");
        assert!(
            backups.contains(&original),
            "the secret of {} is gone",
            first.record.node_id()
        );
    }

    #[test]
    fn oversized_files_are_refused_without_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::new(dir.path());
        fs::create_dir_all(dir.path().join("identity")).unwrap();
        fs::write(store.record_path(), vec![b' '; 100_000]).unwrap();
        assert!(matches!(store.load(), Err(IdentityError::Damaged { .. })));
    }
}
