//! Encrypted sessions between two nodes: the Noise IK handshake (`snow`) and transport
//! encryption with explicit nonces.
//!
//! Protocol name: `Noise_IK_25519_ChaChaPoly_BLAKE2s`, prologue [`PROLOGUE`] (which names
//! the protocol version, so a version mismatch fails the handshake).
//!
//! - The initiator must already hold the responder's verified [`Identity`] (from the root
//!   configuration or a WHOIS answer) and uses its X25519 key as the Noise remote static key.
//! - Message 1 carries the initiator's full public identity as its encrypted payload. The
//!   responder checks that the identity's X25519 key is exactly the static key Noise
//!   authenticated, that its address is the packet's source address, and (through the
//!   caller, which caches results) that the identity verifies: address derived from the keys
//!   and the Ed25519 signature over the X25519 key.
//! - After message 2 both sides take the handshake's two transport keys (Noise's `Split`)
//!   and seal and open in place with `ring` (DECISIONS.md D21): ChaCha20-Poly1305 exactly
//!   as Noise's transport phase does (the nonce is four zero bytes and the counter
//!   little-endian, no associated data), or AES-256-GCM with the same nonces where both
//!   nodes run it in hardware and message 2 chose it ([`Cipher`], D22). Every packet
//!   carries its counter, used as the nonce, so UDP loss and reordering do not break
//!   decryption, and a [`ReplayWindow`] rejects duplicates.
//!
//! Ephemeral keys come from a ChaCha20 generator seeded by the caller, so the crate draws
//! no randomness of its own (the node seeds it from its own seeded RNG).

use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher as NoiseCipher, Dh, Hash, Random};
use snow::HandshakeState;

use crate::identity::{Address, Identity, SecretIdentity};
use crate::replay::ReplayWindow;
use crate::wire::data::TAG_LEN;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue; it includes the wire protocol version.
pub const PROLOGUE: &[u8] = b"ztrun vl1 version 1";
/// A session refuses to send once its counter reaches this (far below snow's limit).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);

/// Why a handshake or transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Noise rejected a message (bad MAC, wrong key, malformed).
    #[error("noise {stage} failed")]
    Noise {
        /// Which step.
        stage: &'static str,
        /// The cause.
        #[source]
        source: snow::Error,
    },
    /// The initiator's payload is not an identity.
    #[error("handshake payload is not an identity")]
    BadPayload,
    /// The identity's X25519 key differs from the static key Noise authenticated.
    #[error("identity {address} does not own the handshake's static key")]
    KeyMismatch {
        /// The claimed address.
        address: Address,
    },
    /// The identity's address differs from the packet's source address.
    #[error("identity {identity} sent from address {claimed}")]
    AddressMismatch {
        /// The identity's address.
        identity: Address,
        /// The address in the header.
        claimed: Address,
    },
    /// The packet counter was seen before or is too old.
    #[error("replayed or too old counter {counter}")]
    Replay {
        /// The counter.
        counter: u64,
    },
    /// The session has sent too many packets and must be replaced.
    #[error("session counter exhausted")]
    Exhausted,
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// Snow's default primitives, with randomness from a caller-supplied seed, and the
/// AEAD from `ring` (the same ChaCha20-Poly1305 of RFC 8439 with Noise's nonce layout,
/// so the bytes on the wire do not change; its assembly runs about twice as fast as the
/// portable implementation, and the AEAD is most of the data path's CPU time).
struct SeededResolver {
    seed: [u8; 32],
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn NoiseCipher>> {
        RingResolver
            .resolve_cipher(choice)
            .or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    let params = NOISE_PARAMS
        .parse()
        .expect("constant Noise parameters are valid");
    snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }))
}

fn noise(stage: &'static str) -> impl FnOnce(snow::Error) -> SessionError {
    move |source| SessionError::Noise { stage, source }
}

/// An initiator waiting for message 2.
pub struct InitiatorHandshake {
    state: HandshakeState,
    pub(crate) local_index: u32,
}

impl std::fmt::Debug for InitiatorHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InitiatorHandshake({})", self.local_index)
    }
}

/// Starts a handshake with `remote` (whose identity the caller has verified); returns the
/// state and Noise message 1. `seed` feeds the ephemeral key generation; `local_index` is
/// the session index the responder will address packets to.
pub fn initiate(
    local: &SecretIdentity,
    remote: &Identity,
    seed: [u8; 32],
    local_index: u32,
) -> Result<(InitiatorHandshake, Vec<u8>), SessionError> {
    let mut state = builder(seed)
        .local_private_key(local.x25519_secret())
        .and_then(|b| b.remote_public_key(remote.x25519_public()))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .map_err(noise("initiator setup"))?;
    let mut msg = vec![0u8; 512];
    let n = state
        .write_message(&local.public().to_bytes(), &mut msg)
        .map_err(noise("message 1 write"))?;
    msg.truncate(n);
    Ok((InitiatorHandshake { state, local_index }, msg))
}

impl InitiatorHandshake {
    /// Consumes message 2 and yields the session. `offered_aes`: whether the initiation
    /// offered AES-256-GCM ([`crate::wire::header::FLAG_AES_GCM`]); the responder's choice
    /// is message 2's payload (empty: ChaCha20-Poly1305, as responders that predate the
    /// choice send).
    pub fn finish(
        mut self,
        remote_index: u32,
        msg2: &[u8],
        offered_aes: bool,
        now: Instant,
    ) -> Result<Session, SessionError> {
        let mut payload = vec![0u8; msg2.len()];
        let n = self
            .state
            .read_message(msg2, &mut payload)
            .map_err(noise("message 2 read"))?;
        let cipher = match &payload[..n] {
            [] => Cipher::ChaChaPoly,
            [Cipher::AES_256_GCM_CHOSEN] if offered_aes => Cipher::Aes256Gcm,
            _ => return Err(SessionError::BadPayload),
        };
        let keys = transport_keys(&mut self.state, cipher)?;
        Ok(Session::new(
            cipher,
            keys,
            self.local_index,
            remote_index,
            now,
            true,
        ))
    }
}

/// What a responder gets from a valid message 1.
#[derive(Debug)]
pub struct Responded {
    /// The initiator's identity: its X25519 key and address are checked; the caller must
    /// still run (or have cached) [`Identity::verify`].
    pub identity: Identity,
    /// The new session (not yet confirmed by the initiator).
    pub session: Session,
    /// Noise message 2.
    pub msg2: Vec<u8>,
}

/// Answers Noise message 1 from the node whose header source address is `claimed`. The
/// transport is AES-256-GCM when the initiator offered it and this node uses it
/// (`(offered, use)`), else ChaCha20-Poly1305.
#[allow(clippy::too_many_arguments)]
pub fn respond(
    local: &SecretIdentity,
    claimed: Address,
    msg1: &[u8],
    seed: [u8; 32],
    local_index: u32,
    remote_index: u32,
    (offered_aes, use_aes): (bool, bool),
    now: Instant,
) -> Result<Responded, SessionError> {
    let mut state = builder(seed)
        .local_private_key(local.x25519_secret())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(noise("responder setup"))?;
    let mut payload = vec![0u8; msg1.len()];
    let n = state
        .read_message(msg1, &mut payload)
        .map_err(noise("message 1 read"))?;
    let identity = Identity::from_bytes(&payload[..n]).map_err(|_| SessionError::BadPayload)?;
    if state.get_remote_static() != Some(&identity.x25519_public()[..]) {
        return Err(SessionError::KeyMismatch {
            address: identity.address(),
        });
    }
    if identity.address() != claimed {
        return Err(SessionError::AddressMismatch {
            identity: identity.address(),
            claimed,
        });
    }
    let (cipher, payload): (Cipher, &[u8]) = if offered_aes && use_aes {
        (Cipher::Aes256Gcm, &[Cipher::AES_256_GCM_CHOSEN])
    } else {
        (Cipher::ChaChaPoly, &[])
    };
    let mut msg2 = vec![0u8; 256];
    let n = state
        .write_message(payload, &mut msg2)
        .map_err(noise("message 2 write"))?;
    msg2.truncate(n);
    let keys = transport_keys(&mut state, cipher)?;
    Ok(Responded {
        identity,
        session: Session::new(cipher, keys, local_index, remote_index, now, false),
        msg2,
    })
}

/// The AEAD of a session's transport packets. The handshake is always Noise's
/// ChaCha20-Poly1305; the transport uses AES-256-GCM with the same keys and nonces when
/// both nodes have the hardware for it (DECISIONS.md D22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): Noise's own transport.
    ChaChaPoly,
    /// AES-256-GCM, where both ends have AES and carry-less multiplication instructions.
    Aes256Gcm,
}

impl Cipher {
    /// The byte naming the cipher in message 2's payload.
    const AES_256_GCM_CHOSEN: u8 = 1;
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cipher::ChaChaPoly => "ChaCha20-Poly1305",
            Cipher::Aes256Gcm => "AES-256-GCM",
        })
    }
}

/// Whether this CPU runs AES-256-GCM in hardware (AES and carry-less multiplication
/// instructions), where it is about 2.5 times as fast as ChaCha20-Poly1305; without them
/// ChaCha20-Poly1305 is the faster one.
pub fn aes_gcm_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The two transport keys of a finished handshake, ours to send with first: Noise's
/// `Split()` gives the initiator's sending key first.
fn transport_keys(
    state: &mut HandshakeState,
    cipher: Cipher,
) -> Result<(LessSafeKey, LessSafeKey), SessionError> {
    if !state.is_handshake_finished() {
        return Err(noise("transport switch")(snow::Error::State(
            snow::error::StateProblem::HandshakeNotFinished,
        )));
    }
    let (mut first, mut second) = state.dangerously_get_raw_split();
    let algorithm = match cipher {
        Cipher::ChaChaPoly => &CHACHA20_POLY1305,
        Cipher::Aes256Gcm => &AES_256_GCM,
    };
    let key = |k: &[u8; 32]| {
        UnboundKey::new(algorithm, k)
            .map(LessSafeKey::new)
            .expect("both ciphers take 32-byte keys")
    };
    let keys = if state.is_initiator() {
        (key(&first), key(&second))
    } else {
        (key(&second), key(&first))
    };
    first.fill(0);
    second.fill(0);
    Ok(keys)
}

/// The nonce of packet `counter`, for both ciphers: four zero bytes, then the counter
/// little-endian (Noise's layout for ChaCha20-Poly1305; Noise's AES-GCM would write the
/// counter big-endian, but the AES-GCM transport is this protocol's own, PROTOCOL.md §4).
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// An established session: keys, counters and the replay window.
pub struct Session {
    cipher: Cipher,
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    send_counter: u64,
    replay: ReplayWindow,
    pub(crate) created: Instant,
    pub(crate) initiator: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("sent", &self.send_counter)
            .field("initiator", &self.initiator)
            .finish()
    }
}

impl Session {
    fn new(
        cipher: Cipher,
        (send_key, recv_key): (LessSafeKey, LessSafeKey),
        local_index: u32,
        remote_index: u32,
        now: Instant,
        initiator: bool,
    ) -> Self {
        Session {
            cipher,
            send_key,
            recv_key,
            local_index,
            remote_index,
            send_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            initiator,
        }
    }

    /// The transport's AEAD.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Packets sent so far.
    pub fn packets_sent(&self) -> u64 {
        self.send_counter
    }

    /// Encrypts `plaintext`; returns the counter used and the ciphertext with its tag.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<(u64, Vec<u8>), SessionError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        let counter = self.seal_append(plaintext, &mut out)?;
        Ok((counter, out))
    }

    /// The counter the next [`Session::seal_append`] will use (to write it ahead of the
    /// ciphertext); `Exhausted` once the session must not seal any more.
    pub fn next_counter(&self) -> Result<u64, SessionError> {
        if self.send_counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        Ok(self.send_counter)
    }

    /// Encrypts `plaintext` under the next counter and appends the ciphertext (with its
    /// tag) to `out`, so a packet is built in one buffer. Returns the counter used. On an
    /// error `out` is left as it was.
    pub fn seal_append(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u64, SessionError> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        self.seal_in_place(out, start)
            .inspect_err(|_| out.truncate(start))
    }

    /// Encrypts `buf[start..]` in place under the next counter and appends the tag: a
    /// packet whose header and plaintext were written into one buffer is sealed without a
    /// copy. Returns the counter used. On an error `buf` is left as it was.
    pub fn seal_in_place(&mut self, buf: &mut Vec<u8>, start: usize) -> Result<u64, SessionError> {
        let counter = self.next_counter()?;
        let tag = self
            .send_key
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), &mut buf[start..])
            .map_err(|_| noise("seal")(snow::Error::Input))?;
        buf.extend_from_slice(tag.as_ref());
        self.send_counter += 1;
        Ok(counter)
    }

    /// Decrypts a packet, rejecting replays; the window moves only for authentic packets.
    pub fn open(&mut self, counter: u64, ciphertext: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut buf = ciphertext.to_vec();
        let n = self.open_in_place(counter, &mut buf)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Decrypts `ciphertext` (with its tag) in place and returns the plaintext, the front
    /// of the same bytes; rejects replays, and the window moves only for authentic
    /// packets. On an error the bytes are garbage.
    pub fn open_in_place<'a>(
        &mut self,
        counter: u64,
        ciphertext: &'a mut [u8],
    ) -> Result<&'a mut [u8], SessionError> {
        if !self.replay.check(counter) {
            return Err(SessionError::Replay { counter });
        }
        let plain = self
            .recv_key
            .open_in_place(nonce(counter), Aad::empty(), ciphertext)
            .map_err(|_| noise("open")(snow::Error::Decrypt))?;
        self.replay.accept(counter);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::test_identity;

    /// The AEAD from `ring` produces exactly the bytes of the portable implementation
    /// (nodes built before the switch still understand every packet), and each opens
    /// what the other sealed.
    #[test]
    fn ring_and_portable_chachapoly_are_the_same_cipher() {
        let choice = CipherChoice::ChaChaPoly;
        let mut fast = RingResolver.resolve_cipher(&choice).unwrap();
        let mut portable = DefaultResolver.resolve_cipher(&choice).unwrap();
        let key = [7u8; 32];
        fast.set(&key);
        portable.set(&key);
        for len in [0usize, 1, 63, 64, 1400, 2800, 9000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let nonce = 0x0102_0304_0506_0708 + len as u64;
            let mut a = vec![0u8; len + 16];
            let mut b = vec![0u8; len + 16];
            assert_eq!(fast.encrypt(nonce, b"ad", &plain, &mut a), len + 16);
            assert_eq!(portable.encrypt(nonce, b"ad", &plain, &mut b), len + 16);
            assert_eq!(a, b, "ciphertexts differ at length {len}");
            let mut out = vec![0u8; len + 16];
            assert_eq!(portable.decrypt(nonce, b"ad", &a, &mut out).unwrap(), len);
            assert_eq!(out[..len], plain[..]);
            assert_eq!(fast.decrypt(nonce, b"ad", &b, &mut out).unwrap(), len);
            assert_eq!(out[..len], plain[..]);
            a[len / 2] ^= 1;
            assert!(fast.decrypt(nonce, b"ad", &a, &mut out).is_err());
        }
    }

    /// `seal_append` writes after what the buffer holds, uses the counter `next_counter`
    /// announced, and leaves the buffer untouched when it refuses.
    #[test]
    fn seal_append_builds_the_packet_in_place() {
        let (mut a, mut b, _) = pair();
        let mut pkt = b"header".to_vec();
        let announced = a.next_counter().unwrap();
        let counter = a.seal_append(b"frame bytes", &mut pkt).unwrap();
        assert_eq!(counter, announced);
        assert_eq!(&pkt[..6], b"header");
        assert_eq!(pkt.len(), 6 + 11 + TAG_LEN);
        assert_eq!(b.open(counter, &pkt[6..]).unwrap(), b"frame bytes");
        assert_eq!(a.next_counter().unwrap(), counter + 1);
        a.send_counter = REJECT_AFTER_MESSAGES;
        let before = pkt.clone();
        assert!(matches!(
            a.seal_append(b"more", &mut pkt),
            Err(SessionError::Exhausted)
        ));
        assert_eq!(pkt, before);
    }

    /// The in-place transport computes exactly what snow's transport mode does with the
    /// same handshake, both ways (nodes built before it understand every packet).
    #[test]
    fn in_place_transport_matches_snows() {
        let (a, b) = (test_identity(11), test_identity(12));
        let mut i = builder([1; 32])
            .local_private_key(a.x25519_secret())
            .and_then(|x| x.remote_public_key(b.public().x25519_public()))
            .and_then(|x| x.prologue(PROLOGUE))
            .and_then(|x| x.build_initiator())
            .unwrap();
        let mut r = builder([2; 32])
            .local_private_key(b.x25519_secret())
            .and_then(|x| x.prologue(PROLOGUE))
            .and_then(|x| x.build_responder())
            .unwrap();
        let (mut m, mut p) = ([0u8; 512], [0u8; 512]);
        let n = i.write_message(b"id", &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        let chacha = Cipher::ChaChaPoly;
        let keys_i = transport_keys(&mut i, chacha).unwrap();
        let keys_r = transport_keys(&mut r, chacha).unwrap();
        let mut ours_i = Session::new(chacha, keys_i, 1, 2, Instant::now(), true);
        let mut ours_r = Session::new(chacha, keys_r, 2, 1, Instant::now(), false);
        let snow_i = i.into_stateless_transport_mode().unwrap();
        let snow_r = r.into_stateless_transport_mode().unwrap();
        for len in [0usize, 1, 1400, 9000] {
            let plain: Vec<u8> = (0..len).map(|x| (x * 7) as u8).collect();
            for (ours, theirs, peer) in [
                (&mut ours_i, &snow_i, &snow_r),
                (&mut ours_r, &snow_r, &snow_i),
            ] {
                let (counter, sealed) = ours.seal(&plain).unwrap();
                let mut expected = vec![0u8; len + TAG_LEN];
                theirs
                    .write_message(counter, &plain, &mut expected)
                    .unwrap();
                assert_eq!(sealed, expected, "ciphertexts differ at length {len}");
                let mut back = vec![0u8; len + TAG_LEN];
                let n = peer.read_message(counter, &sealed, &mut back).unwrap();
                assert_eq!(back[..n], plain[..]);
            }
            let (counter, sealed) = {
                let mut out = vec![0u8; len + TAG_LEN];
                let c = 1000 + len as u64;
                snow_r.write_message(c, &plain, &mut out).unwrap();
                (c, out)
            };
            assert_eq!(ours_i.open(counter, &sealed).unwrap(), plain);
        }
    }

    /// A packet sealed in place after its header opens in place to the same bytes, and a
    /// flipped bit anywhere in the ciphertext or tag is refused without moving the window.
    #[test]
    fn seal_and_open_in_place() {
        let (mut a, mut b, _) = pair();
        let mut pkt = b"head".to_vec();
        pkt.extend_from_slice(b"frame bytes");
        let counter = a.seal_in_place(&mut pkt, 4).unwrap();
        assert_eq!(pkt.len(), 4 + 11 + TAG_LEN);
        assert_eq!(&pkt[..4], b"head");
        let good = pkt.clone();
        for bit in [4 * 8, (pkt.len() - 1) * 8 + 7] {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                b.open_in_place(counter, &mut bad[4..]),
                Err(SessionError::Noise { .. })
            ));
        }
        assert_eq!(
            b.open_in_place(counter, &mut pkt[4..]).unwrap(),
            b"frame bytes"
        );
        let mut again = good.clone();
        assert!(matches!(
            b.open_in_place(counter, &mut again[4..]),
            Err(SessionError::Replay { .. })
        ));
    }

    fn pair() -> (Session, Session, SecretIdentity) {
        pair_with(false, false)
    }

    /// A session between two identities; the initiator offers AES-256-GCM if `offer`,
    /// the responder uses it if `accept`.
    fn pair_with(offer: bool, accept: bool) -> (Session, Session, SecretIdentity) {
        let a = test_identity(11);
        let b = test_identity(12);
        let now = Instant::now();
        let (hs, m1) = initiate(&a, b.public(), [1; 32], 100).unwrap();
        let r = respond(
            &b,
            a.address(),
            &m1,
            [2; 32],
            200,
            100,
            (offer, accept),
            now,
        )
        .unwrap();
        assert_eq!(&r.identity, a.public());
        let sa = hs.finish(200, &r.msg2, offer, now).unwrap();
        (sa, r.session, a)
    }

    /// AES-256-GCM is used exactly when the initiator offers it and the responder takes
    /// it; both ends agree, and packets go both ways under it.
    #[test]
    fn the_transport_cipher_is_negotiated() {
        for (offer, accept) in [(false, false), (true, false), (false, true), (true, true)] {
            let (mut a, mut b, _) = pair_with(offer, accept);
            let want = if offer && accept {
                Cipher::Aes256Gcm
            } else {
                Cipher::ChaChaPoly
            };
            assert_eq!((a.cipher(), b.cipher()), (want, want), "{offer} {accept}");
            let (c, ct) = a.seal(b"there").unwrap();
            assert_eq!(b.open(c, &ct).unwrap(), b"there");
            let (c, ct) = b.seal(b"back").unwrap();
            assert_eq!(a.open(c, &ct).unwrap(), b"back");
        }
        // An initiator that did not offer AES refuses a response that chose it.
        let a = test_identity(11);
        let b = test_identity(12);
        let now = Instant::now();
        let (hs, m1) = initiate(&a, b.public(), [1; 32], 100).unwrap();
        let r = respond(&b, a.address(), &m1, [2; 32], 200, 100, (true, true), now).unwrap();
        assert!(matches!(
            hs.finish(200, &r.msg2, false, now),
            Err(SessionError::BadPayload)
        ));
    }

    #[test]
    fn handshake_then_transport_both_ways_with_reordering() {
        let (mut a, mut b, _) = pair();
        let p1 = a.seal(b"one").unwrap();
        let p2 = a.seal(b"two").unwrap();
        assert_eq!(b.open(p2.0, &p2.1).unwrap(), b"two");
        assert_eq!(b.open(p1.0, &p1.1).unwrap(), b"one");
        let back = b.seal(b"back").unwrap();
        assert_eq!(a.open(back.0, &back.1).unwrap(), b"back");
    }

    #[test]
    fn replayed_and_forged_packets_are_rejected() {
        let (mut a, mut b, _) = pair();
        let (c, ct) = a.seal(b"hello").unwrap();
        b.open(c, &ct).unwrap();
        assert!(matches!(b.open(c, &ct), Err(SessionError::Replay { .. })));
        let (c2, mut ct2) = a.seal(b"hello").unwrap();
        ct2[0] ^= 1;
        assert!(matches!(b.open(c2, &ct2), Err(SessionError::Noise { .. })));
        // The forged packet did not consume its counter: the genuine one still opens.
        ct2[0] ^= 1;
        assert_eq!(b.open(c2, &ct2).unwrap(), b"hello");
        // A packet opened under the wrong counter fails authentication.
        let (c3, ct3) = a.seal(b"x").unwrap();
        assert!(b.open(c3 + 1, &ct3).is_err());
    }

    #[test]
    fn responder_rejects_wrong_claimed_address_and_wrong_responder_key() {
        let a = test_identity(11);
        let b = test_identity(12);
        let c = test_identity(13);
        let now = Instant::now();
        let (_, m1) = initiate(&a, b.public(), [1; 32], 1).unwrap();
        assert!(matches!(
            respond(&b, c.address(), &m1, [2; 32], 2, 1, (false, false), now),
            Err(SessionError::AddressMismatch { .. })
        ));
        // A message meant for b cannot be read by c.
        assert!(matches!(
            respond(&c, a.address(), &m1, [2; 32], 2, 1, (false, false), now),
            Err(SessionError::Noise { .. })
        ));
    }
}
