//! The state directory: identity and per-network state of a node.
//!
//! Chosen, first match wins: `--home`, `$ZTRUN_HOME`, `$XDG_DATA_HOME/ztrun`,
//! `$HOME/.local/share/ztrun`. It is created with mode 0700 when missing.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No candidate location exists.
    #[error("no state directory: pass --home DIR or set ZTRUN_HOME (HOME is unset or unusable)")]
    Unresolved,
    /// Creating or checking the directory failed.
    #[error("cannot use state directory {path}: {source}; pass --home DIR to choose another")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Resolve the state directory from an explicit choice and the environment.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, HomeError> {
    resolve_with(explicit, |k| std::env::var_os(k))
}

fn resolve_with(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, HomeError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = env("ZTRUN_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = env("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p).join("ztrun"));
    }
    match env("HOME").filter(|p| !p.is_empty()) {
        Some(h) if Path::new(&h) != Path::new("/nonexistent") => {
            Ok(PathBuf::from(h).join(".local/share/ztrun"))
        }
        _ => Err(HomeError::Unresolved),
    }
}

/// Create `path` (and parents) with mode 0700 if missing; refuse a path that is not a
/// directory. An existing directory keeps its mode.
pub fn ensure(path: &Path) -> Result<(), HomeError> {
    let io = |source| HomeError::Io {
        path: path.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io)?;
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Err(io(std::io::Error::other("not a directory")));
    }
    Ok(())
}

/// Write `contents` to `path` readable by the owner only (mode 0600), atomically: a
/// temporary file in the same directory renamed over the target.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Like [`write_private`], but fails with [`std::io::ErrorKind::AlreadyExists`], leaving
/// the file alone, when `path` exists (as a file, a directory or a symbolic link).
///
/// The new file is written aside and linked into place, so the check and the creation
/// are one step (link(2) refuses an existing name) and `path` never holds half a file.
pub fn write_private_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.new{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    write_private(&tmp, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn explicit_home_wins() {
        let got = resolve_with(Some(Path::new("/x")), env(&[("ZTRUN_HOME", "/y")])).unwrap();
        assert_eq!(got, PathBuf::from("/x"));
    }

    #[test]
    fn environment_order() {
        let e = [("XDG_DATA_HOME", "/d"), ("HOME", "/h")];
        assert_eq!(
            resolve_with(None, env(&e)).unwrap(),
            PathBuf::from("/d/ztrun")
        );
        let e = [("HOME", "/h")];
        assert_eq!(
            resolve_with(None, env(&e)).unwrap(),
            PathBuf::from("/h/.local/share/ztrun")
        );
        let e = [("ZTRUN_HOME", "/z"), ("HOME", "/h")];
        assert_eq!(resolve_with(None, env(&e)).unwrap(), PathBuf::from("/z"));
    }

    #[test]
    fn nobody_without_home_gets_an_actionable_error() {
        let e = [("HOME", "/nonexistent")];
        let err = resolve_with(None, env(&e)).unwrap_err();
        assert!(err.to_string().contains("--home"), "{err}");
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("identity.secret");
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        ensure(&dir.path().join("a/b")).unwrap();
        let mode = std::fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
}
