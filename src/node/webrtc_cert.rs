//! The WebRTC-direct certificate, kept in the data dir so that the `/certhash/` in the
//! node's `/webrtc-direct` addresses stays the same across restarts.
//!
//! The file (`webrtc-cert.pem`, mode 0600) is the format `libp2p-webrtc` reads: an
//! `EXPIRES` block (the expiry, seconds since the Unix epoch, 8 bytes little-endian),
//! a blank line, then the `PRIVATE_KEY` (PKCS#8) and `CERTIFICATE` blocks.
//!
//! Rotation: a certificate is made valid for [`VALIDITY_DAYS`] days; when the node
//! starts and the stored one has less than [`ROTATE_BEFORE_DAYS`] days left (or has
//! expired), a new one replaces it and the certhash changes. A file that exists but
//! cannot be read as a certificate is an error, not silently replaced: the certhash
//! is part of addresses that other peers hold.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use libp2p_webrtc::tokio::Certificate;
use rcgen::{CertificateParams, KeyPair};

/// The file name in the data dir.
pub const CERT_FILE: &str = "webrtc-cert.pem";
/// How long a new certificate is valid.
pub const VALIDITY_DAYS: i64 = 365;
/// A stored certificate with fewer days left than this is replaced at start.
pub const ROTATE_BEFORE_DAYS: i64 = 30;
/// Bigger files are not read (a real one is well under 1 KiB).
const MAX_FILE: u64 = 16 * 1024;
const DAY: i64 = 86_400;

/// Why the certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The certificate file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file is not a certificate this node wrote.
    #[error("{path}: not a WebRTC certificate ({reason}); move it away to make a new one")]
    Invalid {
        /// The certificate file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A new certificate could not be generated.
    #[error("generating the WebRTC certificate: {0}")]
    Generate(String),
}

/// What [`load_or_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertAction {
    /// The stored certificate is used.
    Loaded,
    /// There was none: a new one was written.
    Created,
    /// The stored one was near its expiry: a new one replaced it.
    Rotated,
}

/// The certificate from `data_dir`, made (or rotated) as the module docs say;
/// `now_unix` is the current time in seconds since the Unix epoch.
pub fn load_or_create(
    data_dir: &Path,
    now_unix: i64,
) -> Result<(Certificate, i64, CertAction), CertError> {
    let path = data_dir.join(CERT_FILE);
    let shown = path.display().to_string();
    let io = |e: std::io::Error| CertError::Io {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let existing = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() > MAX_FILE => {
            return Err(CertError::Invalid {
                path: shown,
                reason: format!("{} bytes, more than {MAX_FILE}", meta.len()),
            });
        }
        Ok(_) => Some(mesh_core::read_text_capped(&path, MAX_FILE).map_err(io)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let action = match existing {
        Some(pem) => {
            let expires = parse_expiry(&pem).map_err(|reason| CertError::Invalid {
                path: shown.clone(),
                reason,
            })?;
            if !needs_rotation(expires, now_unix) {
                let cert = Certificate::from_pem(&pem).map_err(|e| CertError::Invalid {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                return Ok((cert, expires, CertAction::Loaded));
            }
            CertAction::Rotated
        }
        None => CertAction::Created,
    };
    let (pem, expires) = generate_pem(now_unix)?;
    let cert = Certificate::from_pem(&pem).map_err(|e| CertError::Generate(e.to_string()))?;
    // A fresh temporary file (`create_new`, mode 0600, any leftover removed first),
    // then a rename: a file or link left at a fixed temporary name kept its mode (or
    // sent the key where it pointed).
    crate::control_auth::write_private(&path, &pem).map_err(io)?;
    tracing::info!(file = %shown, ?action, expires, "WebRTC certificate written");
    Ok((cert, expires, action))
}

/// Whether a certificate expiring at `expires` (Unix seconds) is replaced at `now`.
pub fn needs_rotation(expires: i64, now_unix: i64) -> bool {
    expires.saturating_sub(now_unix) < ROTATE_BEFORE_DAYS * DAY
}

/// The expiry in the leading `EXPIRES` block (checked here: `libp2p-webrtc` would
/// panic on a short block).
pub fn parse_expiry(pem: &str) -> Result<i64, String> {
    let pem = pem.replace("\r\n", "\n");
    let block = pem
        .trim_start()
        .strip_prefix("-----BEGIN EXPIRES-----")
        .ok_or("no leading EXPIRES block")?;
    let (body, _) = block
        .split_once("-----END EXPIRES-----")
        .ok_or("EXPIRES block not closed")?;
    let body: String = body.split_whitespace().collect();
    let bytes = STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("EXPIRES block: {e}"))?;
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| "EXPIRES block is not 8 bytes".to_string())?;
    i64::try_from(u64::from_le_bytes(bytes)).map_err(|_| "EXPIRES out of range".into())
}

/// A new certificate valid from a day before `now_unix` for [`VALIDITY_DAYS`] days, as
/// PEM in the file's format, and its expiry.
pub fn generate_pem(now_unix: i64) -> Result<(String, i64), CertError> {
    let gen_err = |e: &dyn std::fmt::Display| CertError::Generate(e.to_string());
    let key = KeyPair::generate().map_err(|e| gen_err(&e))?;
    let mut params =
        CertificateParams::new(vec!["libmesh-webrtc".to_string()]).map_err(|e| gen_err(&e))?;
    let expires = now_unix + VALIDITY_DAYS * DAY;
    let (y, m, d) = ymd(now_unix - DAY)?;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(expires)?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key).map_err(|e| gen_err(&e))?;
    // `not_after` is a whole day (midnight UTC): that is the real expiry.
    let expires = expires - expires.rem_euclid(DAY);
    let block = |tag: &str, der: &[u8]| {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        format!(
            "-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n",
            lines.join("\n")
        )
    };
    let pem = format!(
        "{}\n{}\n{}",
        block("EXPIRES", &(expires as u64).to_le_bytes()),
        block("PRIVATE_KEY", &key.serialize_der()),
        block("CERTIFICATE", cert.der()),
    );
    Ok((pem, expires))
}

/// The UTC date of `unix` (year, month, day).
fn ymd(unix: i64) -> Result<(i32, u8, u8), CertError> {
    use chrono::Datelike as _;
    let d = chrono::DateTime::from_timestamp(unix, 0)
        .ok_or_else(|| CertError::Generate(format!("time {unix} out of range")))?;
    let month = u8::try_from(d.month()).map_err(|e| CertError::Generate(e.to_string()))?;
    let day = u8::try_from(d.day()).map_err(|e| CertError::Generate(e.to_string()))?;
    Ok((d.year(), month, day))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn kept_across_loads_and_rotated_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (a, exp, act) = load_or_create(dir.path(), NOW).unwrap();
        assert_eq!(act, CertAction::Created);
        assert!(exp > NOW + (VALIDITY_DAYS - 1) * DAY && exp <= NOW + VALIDITY_DAYS * DAY);
        let (b, exp_b, act) = load_or_create(dir.path(), NOW + 100 * DAY).unwrap();
        assert_eq!(act, CertAction::Loaded);
        assert_eq!((a.fingerprint(), exp), (b.fingerprint(), exp_b));
        // Less than ROTATE_BEFORE_DAYS left: a new certificate and certhash.
        let late = exp - (ROTATE_BEFORE_DAYS - 1) * DAY;
        let (c, exp_c, act) = load_or_create(dir.path(), late).unwrap();
        assert_eq!(act, CertAction::Rotated);
        assert_ne!(c.fingerprint(), a.fingerprint());
        assert!(exp_c > exp);
        let (d, _, act) = load_or_create(dir.path(), late).unwrap();
        assert_eq!(act, CertAction::Loaded);
        assert_eq!(d.fingerprint(), c.fingerprint());
    }

    /// A file left at the old fixed temporary name (here mode 0644) neither lends the
    /// key file its mode nor receives the key.
    #[cfg(unix)]
    #[test]
    fn the_key_file_is_private_whatever_lies_beside_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join("webrtc-cert.pem.tmp");
        std::fs::write(&left, "left").unwrap();
        std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(dir.path(), NOW).unwrap();
        let mode = std::fs::metadata(dir.path().join(CERT_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&left).unwrap(), "left");
    }

    #[test]
    fn rotation_rule() {
        assert!(!needs_rotation(NOW + ROTATE_BEFORE_DAYS * DAY, NOW));
        assert!(needs_rotation(NOW + ROTATE_BEFORE_DAYS * DAY - 1, NOW));
        assert!(needs_rotation(NOW - 1, NOW));
        assert!(needs_rotation(i64::MIN, NOW));
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CERT_FILE);
        let short = "-----BEGIN EXPIRES-----\nAAA=\n-----END EXPIRES-----\n\n";
        for bad in [
            "",
            "garbage",
            short,
            "-----BEGIN EXPIRES-----\n!!!!\n-----END EXPIRES-----\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load_or_create(dir.path(), NOW).unwrap_err();
            assert!(matches!(e, CertError::Invalid { .. }), "{bad:?}: {e}");
        }
        // A valid expiry followed by no key: still an error.
        let (pem, _) = generate_pem(NOW).unwrap();
        let head = pem.split("\n\n").next().unwrap().to_string();
        std::fs::write(&path, format!("{head}\n\n")).unwrap();
        let e = load_or_create(dir.path(), NOW).unwrap_err();
        assert!(matches!(e, CertError::Invalid { .. }), "{e}");
        std::fs::write(&path, vec![b'a'; (MAX_FILE + 1) as usize]).unwrap();
        assert!(load_or_create(dir.path(), NOW).is_err());
    }
}
