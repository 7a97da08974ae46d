//! Build information: `MESHD_VERSION` is the package version, followed by the git
//! revision when built from a checkout (`0.1.0 (git 1a2b3c4d5e6f)`), or by
//! `$MESHD_GIT_REV` when the builder sets it (a packager building from a tarball).

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MESHD_GIT_REV");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&dir);
    let rev = match std::env::var("MESHD_GIT_REV") {
        Ok(r) if !r.is_empty() => Some(r),
        _ => {
            let rev = git(dir, &["rev-parse", "--short=12", "HEAD"]);
            // Rebuild when HEAD moves: HEAD itself, and the branch it names.
            if let Some(git_dir) = git(dir, &["rev-parse", "--absolute-git-dir"]) {
                println!("cargo:rerun-if-changed={git_dir}/HEAD");
                if let (Some(common), Some(branch)) = (
                    git(
                        dir,
                        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
                    ),
                    git(dir, &["symbolic-ref", "-q", "HEAD"]),
                ) {
                    println!("cargo:rerun-if-changed={common}/{branch}");
                    println!("cargo:rerun-if-changed={common}/packed-refs");
                }
            }
            rev
        }
    };
    let full = match rev {
        Some(rev) => format!("{version} (git {rev})"),
        None => version,
    };
    println!("cargo:rustc-env=MESHD_VERSION={full}");
}
