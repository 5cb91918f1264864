//! The node identity file in the state directory.
//!
//! `identity.secret` (mode 0600) holds the secret text form; `identity.public` the public
//! one, for sharing. A missing identity is generated on first use; a file that does not
//! parse, or whose address does not derive from its keys, is an error naming the file,
//! never silently replaced.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use zt_core::SecretIdentity;

/// Name of the secret identity file inside the state directory.
pub const SECRET_FILE: &str = "identity.secret";
/// Name of the public identity file inside the state directory.
pub const PUBLIC_FILE: &str = "identity.public";

/// 32 bytes from the operating system's generator.
pub fn os_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(seed)
}

/// Generate a new identity from OS randomness.
pub fn generate() -> anyhow::Result<SecretIdentity> {
    let mut rng = ChaCha20Rng::from_seed(os_seed()?);
    Ok(SecretIdentity::generate(&mut rng))
}

/// Parse and verify a secret identity read from `path`.
pub fn parse(text: &str, path: &Path) -> anyhow::Result<SecretIdentity> {
    let id: SecretIdentity = text
        .parse()
        .with_context(|| format!("{} is not a valid secret identity", path.display()))?;
    id.public().verify().with_context(|| {
        format!(
            "{}: the address does not derive from the keys",
            path.display()
        )
    })?;
    Ok(id)
}

/// Load the identity of the state directory `home`, creating it when missing.
/// Returns the identity and whether it was created now.
pub fn load_or_create(home: &Path) -> anyhow::Result<(SecretIdentity, bool)> {
    let secret: PathBuf = home.join(SECRET_FILE);
    match std::fs::read_to_string(&secret) {
        Ok(text) => Ok((parse(&text, &secret)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = generate()?;
            save(home, &id)?;
            Ok((id, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", secret.display())),
    }
}

/// Write both identity files into `home`.
pub fn save(home: &Path, id: &SecretIdentity) -> anyhow::Result<()> {
    let secret = home.join(SECRET_FILE);
    crate::home::write_private(&secret, id.to_secret_string().as_bytes())
        .with_context(|| format!("cannot write {}", secret.display()))?;
    let public = home.join(PUBLIC_FILE);
    std::fs::write(&public, format!("{}\n", id.public()))
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.address(), b.address());
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "garbage").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains(SECRET_FILE), "{err:#}");
        // The broken file is left alone for the person to inspect.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SECRET_FILE)).unwrap(),
            "garbage"
        );
    }
}
