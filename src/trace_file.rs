//! The trace file of `meshd --trace FILE`: JSON lines, rotated by size so that what
//! peers make the node trace (a `peer/connected` per connection, a rejection per refused
//! record) cannot fill the disk. Past `max` bytes, after a whole line, `FILE` becomes
//! `FILE.1` (replacing the one before) and a new `FILE` starts: at most about twice
//! `max` on disk (if `FILE` cannot be moved, it is emptied instead).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The default size at which the trace file rotates: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A file appended to and rotated at `max` bytes (checked at each flush, which the
/// trace sink does after every line).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max: u64,
}

/// Opens `path` to append, created 0600 (the trace names the swarms joined and the
/// peers met), and never through a symlink: in a directory others can write, a link
/// planted at `path` (before the start or after a rotation moved the file away) had the
/// node append peers' words to any file its user may write.
fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = o.open(path)?;
    // A file of ours that was there before (made 0644 by an earlier version) is made
    // private too; not one someone else made for us to write (a log shipper's, root's
    // `/dev/null`), which is left as it is.
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let meta = file.metadata()?;
        if meta.is_file()
            && meta.uid() == nix::unistd::geteuid().as_raw()
            && meta.mode() & 0o077 != 0
            && let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(path = %path.display(), error = %e, "trace file left as it is");
        }
    }
    Ok(file)
}

impl RotatingFile {
    /// Opens `path` for appending (its current size counts), rotating past `max` bytes.
    pub fn open(path: &Path, max: u64) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            written,
            max,
        })
    }

    /// Where the previous file goes: `FILE.1`.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// FILE becomes FILE.1 and a new FILE starts. If FILE cannot be moved, it is
    /// emptied instead (the bound holds; the error is reported).
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if let Err(e) = std::fs::rename(&self.path, Self::rotated_path(&self.path)) {
            self.file.set_len(0)?;
            self.written = 0;
            return Err(e);
        }
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.written > self.max {
            self.rotate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_path_is_refused_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "mine\n").unwrap();
        let path = dir.path().join("trace.jsonl");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(RotatingFile::open(&path, 1 << 20).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");

        let path = dir.path().join("fresh.jsonl");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = RotatingFile::open(&path, 10).unwrap();
        f.write_all(b"0123456789ab\n").unwrap();
        f.flush().unwrap();
        for p in [path.clone(), RotatingFile::rotated_path(&path)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn the_file_rotates_after_a_whole_line_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = RotatingFile::open(&path, 10).unwrap();
        f.write_all(b"12345\n").unwrap();
        f.flush().unwrap();
        // 4 + 6 bytes: not past the bound yet.
        assert!(!RotatingFile::rotated_path(&path).exists());
        f.write_all(b"abcdef\n").unwrap();
        f.flush().unwrap();
        let rotated = std::fs::read_to_string(RotatingFile::rotated_path(&path)).unwrap();
        assert_eq!(rotated, "old\n12345\nabcdef\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        f.write_all(b"new\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        // Past the bound again: the older rotated file is replaced.
        f.write_all(b"0123456789\n").unwrap();
        f.flush().unwrap();
        let rotated = std::fs::read_to_string(RotatingFile::rotated_path(&path)).unwrap();
        assert_eq!(rotated, "new\n0123456789\n");
    }

    #[test]
    fn a_file_that_cannot_be_moved_is_emptied_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        // FILE.1 is a directory that is not empty: the rename fails.
        let blocked = RotatingFile::rotated_path(&path);
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), "x").unwrap();
        let mut f = RotatingFile::open(&path, 10).unwrap();
        f.write_all(b"0123456789ab\n").unwrap();
        assert!(f.flush().is_err(), "the failed rotation is reported");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        f.write_all(b"next\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next\n");
    }
}
