//! Node identities: an X25519 key for key agreement, an Ed25519 key for signatures, and the
//! 40-bit [`Address`] that names the node.
//!
//! The address is not chosen: it is derived from both public keys through a memory-hard
//! function (Argon2id, 2 MiB, one pass), and only key pairs whose digest starts with a byte
//! below [`ADDRESS_DIFFICULTY`] are accepted. Creating an identity therefore costs about
//! eight Argon2id evaluations, and finding a key pair for a *given* address costs about
//! 2^40 × 8 of them, which is what makes address collisions and impersonation expensive
//! (the same idea as ZeroTier's hashcash-like identity generation). Every peer re-derives
//! the address with [`Identity::verify`] before it trusts the keys behind an address.
//!
//! The Ed25519 key also signs the X25519 key, so the agreement key that Noise sessions use
//! is bound to the signing key that will later sign network configurations and
//! certificates.
//!
//! Text forms (one line, lowercase hex):
//! - public: `<address>:1:<x25519 public><ed25519 public>:<signature>`
//! - secret: `<public form>:<x25519 secret><ed25519 secret>`

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use argon2::{Algorithm, Argon2, Params, Version};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};

/// Number of bytes of an [`Address`] on the wire.
pub const ADDRESS_LEN: usize = 5;
/// Length of an [`Identity`] in its binary (wire) form.
pub const IDENTITY_LEN: usize = ADDRESS_LEN + 32 + 32 + 64;
/// An identity is valid only if the first byte of its Argon2id digest is below this.
pub const ADDRESS_DIFFICULTY: u8 = 0x20;

const ARGON2_MEMORY_KIB: u32 = 2048;
const ADDRESS_SALT: &[u8] = b"ztrun identity address v1";
const BINDING_CONTEXT: &[u8] = b"ztrun identity binds x25519 v1";

/// Errors from parsing or checking identities and addresses.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An address does not fit in 40 bits or is not 10 hex digits.
    #[error("invalid address {text:?}: expected 10 hex digits")]
    AddressSyntax {
        /// The rejected text.
        text: String,
    },
    /// Addresses starting with 0x00 or 0xff are reserved.
    #[error("address {address:010x} is reserved (starts with 00 or ff)")]
    ReservedAddress {
        /// The reserved address.
        address: u64,
    },
    /// The text form of an identity is malformed.
    #[error("malformed identity: {reason}")]
    Syntax {
        /// What was wrong.
        reason: &'static str,
    },
    /// The binary form has the wrong length.
    #[error("identity is {len} bytes, expected {IDENTITY_LEN}")]
    Length {
        /// The length given.
        len: usize,
    },
    /// The Ed25519 public key is not a valid curve point.
    #[error("invalid Ed25519 public key")]
    BadSigningKey,
    /// The self-signature binding the X25519 key to the Ed25519 key does not verify.
    #[error("the Ed25519 signature over the X25519 key does not verify")]
    BadBinding,
    /// The address is not the one derived from the keys, or the keys do not meet the
    /// difficulty rule.
    #[error("address {claimed} does not match its keys")]
    AddressMismatch {
        /// The address the identity claims.
        claimed: Address,
    },
    /// The secret keys do not belong to the public identity.
    #[error("secret keys do not match the public identity")]
    SecretMismatch,
    /// Writing an identity file failed.
    #[error("cannot write identity file {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A 40-bit node address, shown as 10 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(u64);

impl Address {
    /// Makes an address from its integer value, rejecting values above 40 bits and the
    /// reserved prefixes 0x00 and 0xff.
    pub fn new(value: u64) -> Result<Self, IdentityError> {
        if value >> 40 != 0 {
            return Err(IdentityError::AddressSyntax {
                text: format!("{value:x}"),
            });
        }
        let top = (value >> 32) as u8;
        if top == 0x00 || top == 0xff {
            return Err(IdentityError::ReservedAddress { address: value });
        }
        Ok(Address(value))
    }

    /// Parses the 5-byte big-endian wire form.
    pub fn from_bytes(bytes: [u8; ADDRESS_LEN]) -> Result<Self, IdentityError> {
        let mut v = 0u64;
        for b in bytes {
            v = (v << 8) | u64::from(b);
        }
        Address::new(v)
    }

    /// The 5-byte big-endian wire form.
    pub fn to_bytes(self) -> [u8; ADDRESS_LEN] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }

    /// The integer value (below 2^40).
    pub fn to_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010x}", self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:010x})", self.0)
    }
}

impl FromStr for Address {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdentityError::AddressSyntax { text: s.into() });
        }
        let v = u64::from_str_radix(s, 16)
            .map_err(|_| IdentityError::AddressSyntax { text: s.into() })?;
        Address::new(v)
    }
}

/// The public half of a node identity. Obtain one by parsing (then call
/// [`Identity::verify`]) or from [`SecretIdentity::public`].
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    address: Address,
    x25519: [u8; 32],
    ed25519: [u8; 32],
    binding: [u8; 64],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.address)
    }
}

/// Computes the Argon2id digest of the two public keys.
fn address_digest(x25519: &[u8; 32], ed25519: &[u8; 32]) -> [u8; 32] {
    let params = Params::new(ARGON2_MEMORY_KIB, 1, 1, Some(32)).expect("constant params are valid");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(x25519);
    input[32..].copy_from_slice(ed25519);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(&input, ADDRESS_SALT, &mut out)
        .expect("constant-size input and output are valid");
    out
}

/// Derives the address for a key pair, or `None` if the keys do not meet the difficulty
/// rule or would give a reserved address.
fn derive_address(x25519: &[u8; 32], ed25519: &[u8; 32]) -> Option<Address> {
    let d = address_digest(x25519, ed25519);
    if d[0] >= ADDRESS_DIFFICULTY {
        return None;
    }
    let mut a = [0u8; ADDRESS_LEN];
    a.copy_from_slice(&d[32 - ADDRESS_LEN..]);
    Address::from_bytes(a).ok()
}

fn binding_message(x25519: &[u8; 32]) -> [u8; BINDING_CONTEXT.len() + 32] {
    let mut m = [0u8; BINDING_CONTEXT.len() + 32];
    m[..BINDING_CONTEXT.len()].copy_from_slice(BINDING_CONTEXT);
    m[BINDING_CONTEXT.len()..].copy_from_slice(x25519);
    m
}

impl Identity {
    /// The node address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The X25519 public key used as the Noise static key.
    pub fn x25519_public(&self) -> &[u8; 32] {
        &self.x25519
    }

    /// The Ed25519 public key.
    pub fn ed25519_public(&self) -> &[u8; 32] {
        &self.ed25519
    }

    /// Checks everything a peer must check before trusting this identity: the Ed25519 key
    /// is a valid point, it signed the X25519 key, and the address is the one the
    /// memory-hard derivation gives for these keys. Costs one Argon2id evaluation.
    pub fn verify(&self) -> Result<(), IdentityError> {
        let vk =
            VerifyingKey::from_bytes(&self.ed25519).map_err(|_| IdentityError::BadSigningKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&self.binding);
        vk.verify_strict(&binding_message(&self.x25519), &sig)
            .map_err(|_| IdentityError::BadBinding)?;
        match derive_address(&self.x25519, &self.ed25519) {
            Some(a) if a == self.address => Ok(()),
            _ => Err(IdentityError::AddressMismatch {
                claimed: self.address,
            }),
        }
    }

    /// The binary form: address (5) ‖ X25519 (32) ‖ Ed25519 (32) ‖ signature (64).
    pub fn to_bytes(&self) -> [u8; IDENTITY_LEN] {
        let mut out = [0u8; IDENTITY_LEN];
        out[..5].copy_from_slice(&self.address.to_bytes());
        out[5..37].copy_from_slice(&self.x25519);
        out[37..69].copy_from_slice(&self.ed25519);
        out[69..].copy_from_slice(&self.binding);
        out
    }

    /// Parses the binary form. This checks syntax only; call [`Identity::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() != IDENTITY_LEN {
            return Err(IdentityError::Length { len: bytes.len() });
        }
        let mut a = [0u8; 5];
        a.copy_from_slice(&bytes[..5]);
        let mut x = [0u8; 32];
        x.copy_from_slice(&bytes[5..37]);
        let mut e = [0u8; 32];
        e.copy_from_slice(&bytes[37..69]);
        let mut s = [0u8; 64];
        s.copy_from_slice(&bytes[69..]);
        Ok(Identity {
            address: Address::from_bytes(a)?,
            x25519: x,
            ed25519: e,
            binding: s,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:1:{}{}:{}",
            self.address,
            hex(&self.x25519),
            hex(&self.ed25519),
            hex(&self.binding)
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;
    /// Parses the public text form. This checks syntax only; call [`Identity::verify`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 4 {
            return Err(IdentityError::Syntax {
                reason: "expected address:1:keys:signature",
            });
        }
        parse_public(&parts)
    }
}

fn parse_public(parts: &[&str]) -> Result<Identity, IdentityError> {
    let address: Address = parts[0].parse()?;
    if parts[1] != "1" {
        return Err(IdentityError::Syntax {
            reason: "unknown identity type (expected 1)",
        });
    }
    let keys = unhex::<64>(parts[2]).ok_or(IdentityError::Syntax {
        reason: "public keys must be 128 hex digits",
    })?;
    let binding = unhex::<64>(parts[3]).ok_or(IdentityError::Syntax {
        reason: "signature must be 128 hex digits",
    })?;
    let mut x25519 = [0u8; 32];
    x25519.copy_from_slice(&keys[..32]);
    let mut ed25519 = [0u8; 32];
    ed25519.copy_from_slice(&keys[32..]);
    Ok(Identity {
        address,
        x25519,
        ed25519,
        binding,
    })
}

/// A node's full identity, including its secret keys.
#[derive(Clone)]
pub struct SecretIdentity {
    public: Identity,
    x25519_secret: [u8; 32],
    ed25519_secret: [u8; 32],
}

impl fmt::Debug for SecretIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretIdentity({}, secret keys hidden)",
            self.public.address
        )
    }
}

impl SecretIdentity {
    /// Generates a new identity: draws key pairs from `rng` until the derived address
    /// meets the difficulty rule and is not reserved (about eight tries on average).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let mut xs = [0u8; 32];
            let mut es = [0u8; 32];
            rng.fill_bytes(&mut xs);
            rng.fill_bytes(&mut es);
            if let Some(id) = Self::from_secrets(xs, es) {
                return id;
            }
        }
    }

    /// Generates a new identity from a 32-byte seed (deterministic: the same seed gives the
    /// same identity). Use [`random_seed`] for a fresh one.
    pub fn generate_from_seed(seed: [u8; 32]) -> Self {
        use rand_core::SeedableRng as _;
        Self::generate(&mut rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// Builds the identity for two secret keys, or `None` if their address is invalid.
    fn from_secrets(xs: [u8; 32], es: [u8; 32]) -> Option<Self> {
        let x25519 = XPublic::from(&StaticSecret::from(xs)).to_bytes();
        let sk = SigningKey::from_bytes(&es);
        let ed25519 = sk.verifying_key().to_bytes();
        let address = derive_address(&x25519, &ed25519)?;
        let binding = sk.sign(&binding_message(&x25519)).to_bytes();
        Some(SecretIdentity {
            public: Identity {
                address,
                x25519,
                ed25519,
                binding,
            },
            x25519_secret: xs,
            ed25519_secret: es,
        })
    }

    /// The public identity.
    pub fn public(&self) -> &Identity {
        &self.public
    }

    /// The node address.
    pub fn address(&self) -> Address {
        self.public.address
    }

    /// The X25519 secret key (the Noise static private key).
    pub(crate) fn x25519_secret(&self) -> &[u8; 32] {
        &self.x25519_secret
    }

    /// Signs `message` with the Ed25519 key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        SigningKey::from_bytes(&self.ed25519_secret)
            .sign(message)
            .to_bytes()
    }

    /// The secret text form (keep it secret: see [`write_secret_file`]).
    pub fn to_secret_string(&self) -> String {
        format!(
            "{}:{}{}",
            self.public,
            hex(&self.x25519_secret),
            hex(&self.ed25519_secret)
        )
    }
}

impl FromStr for SecretIdentity {
    type Err = IdentityError;
    /// Parses the secret text form and checks that the secret keys produce the public
    /// keys (it does not re-run the address derivation; call `public().verify()` for that).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 5 {
            return Err(IdentityError::Syntax {
                reason: "expected address:1:keys:signature:secrets",
            });
        }
        let public = parse_public(&parts[..4])?;
        let secrets = unhex::<64>(parts[4]).ok_or(IdentityError::Syntax {
            reason: "secret keys must be 128 hex digits",
        })?;
        let mut xs = [0u8; 32];
        xs.copy_from_slice(&secrets[..32]);
        let mut es = [0u8; 32];
        es.copy_from_slice(&secrets[32..]);
        let x_pub = XPublic::from(&StaticSecret::from(xs)).to_bytes();
        let e_pub = SigningKey::from_bytes(&es).verifying_key().to_bytes();
        if x_pub != public.x25519 || e_pub != public.ed25519 {
            return Err(IdentityError::SecretMismatch);
        }
        Ok(SecretIdentity {
            public,
            x25519_secret: xs,
            ed25519_secret: es,
        })
    }
}

/// 32 bytes from the operating system's random source (`/dev/urandom`), for
/// [`SecretIdentity::generate_from_seed`] and [`crate::NodeConfig::rng_seed`]. The protocol
/// state machines never call this themselves.
pub fn random_seed() -> std::io::Result<[u8; 32]> {
    use std::io::Read as _;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

/// Writes `contents` to `path` readable and writable by the owner only (mode 0600), also
/// when the file existed before with wider permissions.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), IdentityError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// A deterministic identity for tests (generation costs a few Argon2id runs).
    pub(crate) fn test_identity(seed: u64) -> SecretIdentity {
        SecretIdentity::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    #[test]
    fn generated_identity_verifies_and_round_trips_text_and_bytes() {
        let id = test_identity(1);
        id.public().verify().unwrap();
        let text = id.public().to_string();
        assert!(text.starts_with(&format!("{}:1:", id.address())));
        let back: Identity = text.parse().unwrap();
        assert_eq!(&back, id.public());
        back.verify().unwrap();
        let bin = Identity::from_bytes(&id.public().to_bytes()).unwrap();
        assert_eq!(&bin, id.public());
        let secret: SecretIdentity = id.to_secret_string().parse().unwrap();
        assert_eq!(secret.public(), id.public());
        assert_eq!(secret.x25519_secret(), id.x25519_secret());
    }

    #[test]
    fn tampered_identities_fail_verification() {
        let id = test_identity(2);
        let other = test_identity(3);
        // Another node's keys under this address.
        let mut forged = other.public().clone();
        forged.address = id.address();
        assert!(matches!(
            forged.verify(),
            Err(IdentityError::AddressMismatch { .. })
        ));
        // Swap in another X25519 key: the binding signature breaks.
        let mut swapped = id.public().clone();
        swapped.x25519 = *other.public().x25519_public();
        assert!(matches!(swapped.verify(), Err(IdentityError::BadBinding)));
        // A flipped signature bit.
        let mut bad_sig = id.public().clone();
        bad_sig.binding[10] ^= 1;
        assert!(matches!(bad_sig.verify(), Err(IdentityError::BadBinding)));
    }

    #[test]
    fn seeded_generation_is_deterministic_and_random_seeds_differ() {
        let a = SecretIdentity::generate_from_seed([9; 32]);
        let b = SecretIdentity::generate_from_seed([9; 32]);
        assert_eq!(a.public(), b.public());
        a.public().verify().unwrap();
        let (s1, s2) = (random_seed().unwrap(), random_seed().unwrap());
        assert_ne!(s1, s2);
    }

    #[test]
    fn secret_form_with_wrong_secrets_is_rejected() {
        let a = test_identity(4);
        let b = test_identity(5);
        let mixed = format!(
            "{}:{}{}",
            a.public(),
            hex(&b.x25519_secret),
            hex(&b.ed25519_secret)
        );
        assert!(matches!(
            mixed.parse::<SecretIdentity>(),
            Err(IdentityError::SecretMismatch)
        ));
    }

    #[test]
    fn addresses_parse_and_reject_reserved_values() {
        let a: Address = "89e92ceee5".parse().unwrap();
        assert_eq!(a.to_u64(), 0x89e92ceee5);
        assert_eq!(a.to_bytes(), [0x89, 0xe9, 0x2c, 0xee, 0xe5]);
        assert_eq!(a.to_string(), "89e92ceee5");
        assert!(matches!(
            "00e92ceee5".parse::<Address>(),
            Err(IdentityError::ReservedAddress { .. })
        ));
        assert!(matches!(
            "ffe92ceee5".parse::<Address>(),
            Err(IdentityError::ReservedAddress { .. })
        ));
        assert!("89e92ceee".parse::<Address>().is_err());
        assert!("89e92ceeeg".parse::<Address>().is_err());
        assert!(Address::new(1 << 40).is_err());
    }

    #[test]
    fn malformed_text_is_an_error_not_a_panic() {
        for s in [
            "",
            ":",
            "a:b:c:d",
            "89e92ceee5:1:zz:zz",
            "89e92ceee5:2::",
            "::::::",
        ] {
            assert!(s.parse::<Identity>().is_err(), "{s}");
            assert!(s.parse::<SecretIdentity>().is_err(), "{s}");
        }
    }

    #[test]
    fn secret_file_is_written_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("zt-core-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identity.secret");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let id = test_identity(6);
        write_secret_file(&path, &id.to_secret_string()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back: SecretIdentity = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        assert_eq!(back.public(), id.public());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
