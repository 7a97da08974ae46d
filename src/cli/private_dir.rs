//! The data directory is the user's alone, as ssh's `StrictModes` wants of `~/.ssh`.
//!
//! Its files are written 0600, but a directory another user owns, or may write to, lets
//! that user replace them: delete `control.sock` and listen there, rewrite
//! `control.addr`, and the next `meshd status` sends the live control token to their
//! listener (the whole control API is then theirs). The README's quick start used
//! `/tmp/a`, which anyone could have made first with mode 0777. So `meshd run` and
//! `meshd identity` create a missing data dir 0700, and every command that uses it
//! refuses one that is not owned by the user running it or that its group or others
//! may write to, before reading or sending anything in it.

use std::path::Path;

/// Creates `dir` 0700 when it is missing and `create` holds; then refuses it (with what
/// to do) if its group or others may write to it, or if it is neither the effective
/// user's nor root's (root itself may use anyone's). A missing `dir` that is not created passes (the command reports it its way).
pub(crate) fn ensure_private(dir: &Path, create: bool) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        if create && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("data dir {}: {e}", dir.display()))?;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            return Ok(());
        };
        // Root may use a directory of any owner (a systemd `DynamicUser`'s state
        // directory, say: `meshd --data-dir /var/lib/meshd status` as root); others
        // only their own or root's.
        let me = nix::unistd::geteuid().as_raw();
        if me != 0 && meta.uid() != me && meta.uid() != 0 {
            anyhow::bail!(
                "data dir {} belongs to uid {}, not to this user (uid {me}): another user \
                 could replace its control files and take the control token; use a \
                 directory of your own",
                dir.display(),
                meta.uid()
            );
        }
        if meta.mode() & 0o022 != 0 {
            anyhow::bail!(
                "data dir {} is writable by its group or others (mode {:o}): they could \
                 replace its control files and take the control token; `chmod 700 {}`",
                dir.display(),
                meta.mode() & 0o7777,
                dir.display()
            );
        }
    }
    #[cfg(not(unix))]
    {
        if create && !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("data dir {}: {e}", dir.display()))?;
        }
    }
    Ok(())
}
