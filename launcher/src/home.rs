//! The state directory: identity and per-network state of a node.
//!
//! Chosen, first match wins: `--home`, `$ZTRUN_HOME`, `$XDG_DATA_HOME/ztrun`,
//! `$HOME/.local/share/ztrun`. It is created with mode 0700 when missing.
//!
//! A directory that exists already must be a home ([`prepare`]): empty, or holding a
//! ztrun or controller state (recognised by its files), owned by the user who runs the
//! command and not writable by other users. Anything else (`/etc`, a project directory,
//! another user's directory) is refused with the reason, before anything is written.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No candidate location exists.
    #[error("no state directory: pass --home DIR or set ZTRUN_HOME (HOME is unset or unusable)")]
    Unresolved,
    /// The directory holds other files than a home's.
    #[error(
        "{path} is not empty and holds no ztrun state (it has {found}); a home must be a new \
         or empty directory, or one ztrun or zt controller made: pass --home with another \
         directory"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// Some of its entries.
        found: String,
    },
    /// Another user owns the directory.
    #[error(
        "{path} is owned by uid {owner}, not by you (uid {me}): a home holds your secret \
         identity; pass --home with a directory of your own"
    )]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Who runs the command.
        me: u32,
    },
    /// Other users can write in the directory.
    #[error(
        "{path} is writable by other users (mode {mode:04o}), who could replace the identity \
         or the database in it: run `chmod go-w {path}` or pass --home with another directory"
    )]
    Writable {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
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

/// What a home holds, by name: any of the first four makes a directory a home; a
/// directory holding nothing but names from the whole list is one as well (e.g. a
/// ztrun home where only `zt controller` ran, holding `controller/`).
const HOME_FILES: &[&str] = &[
    "identity.secret",
    "identity.public",
    "controller.redb",
    "authtoken.secret",
    "controller.api",
    "controller",
    "lock",
    "status.json",
    "node.sock",
    "node.log",
];

/// Makes `path` ready to be a home: created with mode 0700 (and parents) when missing;
/// when it exists, checked that it is a directory owned by the user, not writable by
/// others, and either empty or already a home, recognised by its files (`identity.secret`,
/// `controller.redb`, ...; the database's backups and files being written count as a
/// home's). Refusals say why and what to do.
pub fn prepare(path: &Path) -> Result<(), HomeError> {
    let io = |source| HomeError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ensure(path),
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(io(std::io::Error::other("not a directory")));
    }
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(HomeError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(HomeError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(path).map_err(io)? {
        names.push(e.map_err(io)?.file_name().to_string_lossy().into_owned());
    }
    // Ours: the names above, the database's backups and set-aside copies
    // (`controller.redb.*`), and files being written (`.identity.secret.tmp123`).
    let ours = |n: &str| {
        let bare = n.strip_prefix('.').unwrap_or(n);
        HOME_FILES.contains(&n)
            || n.starts_with("controller.redb.")
            || (bare != n && HOME_FILES.iter().any(|f| bare.starts_with(f)))
    };
    let marked = names.iter().any(|n| HOME_FILES[..4].contains(&n.as_str()));
    if marked || names.iter().all(|n| ours(n)) {
        return Ok(());
    }
    let mut other: Vec<&String> = names.iter().filter(|n| !ours(n)).collect();
    other.sort();
    let mut found: Vec<String> = other.iter().take(3).map(|n| format!("{n:?}")).collect();
    if other.len() > 3 {
        found.push(format!("{} more", other.len() - 3));
    }
    Err(HomeError::Foreign {
        path: path.to_owned(),
        found: found.join(", "),
    })
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
    fn homes_are_new_empty_or_ours() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("new");
        prepare(&home).unwrap();
        prepare(&home).unwrap();
        std::fs::write(home.join("identity.secret"), "x").unwrap();
        std::fs::write(home.join("notes.txt"), "x").unwrap();
        prepare(&home).unwrap();
        // A ztrun home where only the controller ran.
        let outer = dir.path().join("outer");
        prepare(&outer.join("controller")).unwrap();
        prepare(&outer).unwrap();
        // Something else.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("passwd"), "x").unwrap();
        let e = prepare(&other).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("\"passwd\""), "{e}");
        let e = prepare(&other.join("passwd")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = prepare(&home).unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 0775)"), "{e}");
        assert!(e.contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&home).unwrap();
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
