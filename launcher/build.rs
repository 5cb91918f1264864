//! Records the git commit the binaries are built from, for `--version`:
//! `ZT_GIT_COMMIT` is `git rev-parse --short HEAD`, or `unknown` outside a git checkout
//! (a source tarball) or without git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ZT_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points to (a
    // commit), and packed-refs (a gc). Only files that exist are named: cargo reruns a
    // build script on every build while a named file is missing.
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) else {
        return;
    };
    let common = git(&["rev-parse", "--git-common-dir"])
        .map(PathBuf::from)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common.join(&reference));
        watched.push(git_dir.join(&reference));
    }
    for path in watched.iter().filter(|p| Path::new(p).is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
