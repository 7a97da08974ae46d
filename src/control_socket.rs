//! The control API on a Unix domain socket, `<data-dir>/control.sock` (mode 0600): the
//! way the node's own user reaches it that no other local user can crowd out.
//!
//! On TCP the control API counts connections before it sees a token (it must, to bound
//! them), so any local process could hold all `[http] max_connections` of them and shut
//! the owner's CLI out. The socket only accepts connections from processes that may
//! write to it: the owner's (and root's). Requests on it need the same token, `Host:
//! localhost` and no `Origin` ([`crate::control_auth::ControlAuth::for_socket`]); the
//! CLI uses it when it exists and falls back to `control.addr` when it does not answer.
//! Unix only; the path must fit a socket address (about 100 bytes), otherwise the node
//! serves TCP alone and says so in its log.

use std::path::{Path, PathBuf};

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// Where a node with data directory `dir` serves its control socket.
pub fn socket_file(dir: &Path) -> PathBuf {
    dir.join(SOCKET_FILE)
}

/// Binds the control socket at `path`, readable and writable by the owner only: bound
/// under a temporary name beside it, given mode 0600, then renamed over `path` (so a
/// socket left there by a node that did not stop cleanly is replaced in one step, and
/// `path` never names a socket with another mode). Any other kind of file at `path` is
/// left alone (an error). A process that connects to the temporary name before its
/// mode changes holds one connection and still needs the token.
#[cfg(unix)]
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{SOCKET_FILE}.{}", std::process::id()));
    // A temporary socket left by a crashed process with the same pid.
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[tokio::test]
    async fn the_socket_is_0600_replaces_a_stale_socket_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let path = socket_file(d.path());
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A node that crashed left its socket: the next one binds all the same, and
        // leaves no temporary name behind.
        drop(first);
        let _second = bind(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let other = d.path().join("not-a-socket");
        std::fs::write(&other, "data").unwrap();
        assert!(bind(&other).is_err());
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "data");
    }
}
