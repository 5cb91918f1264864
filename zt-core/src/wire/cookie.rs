//! Bodies of the two packets of the cookie exchange, the return-routability check a
//! responder makes under load before it spends asymmetric crypto on an initiation (after
//! WireGuard's cookie reply, section 5.4.7 of its paper).
//!
//! ```text
//! COOKIE_REPLY:           receiver index (4) | cookie (16)
//! HANDSHAKE_INIT_COOKIE:  cookie (16) | sender index (4) | Noise message 1
//! ```
//!
//! The COOKIE_REPLY carries the initiator's session index (from the initiation it
//! answers) and a cookie; HANDSHAKE_INIT_COOKIE is a HANDSHAKE_INIT body (see
//! [`super::handshake`]) preceded by the cookie the initiator received. How cookies are
//! made and checked is `crate::admission`.

use super::handshake::{InitPacket, InitRepr};
use super::{read_u32, Result, WireError};

/// Length of a cookie.
pub const COOKIE_LEN: usize = 16;
/// Length of a COOKIE_REPLY body.
pub const COOKIE_REPLY_LEN: usize = 4 + COOKIE_LEN;

/// A view of a COOKIE_REPLY body.
#[derive(Debug, Clone)]
pub struct CookieReplyPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CookieReplyPacket<T> {
    /// Wraps and checks a body: exactly [`COOKIE_REPLY_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < COOKIE_REPLY_LEN {
            return Err(WireError::Truncated {
                what: "cookie reply",
                len,
            });
        }
        if len > COOKIE_REPLY_LEN {
            return Err(WireError::Trailing {
                what: "cookie reply",
                count: len - COOKIE_REPLY_LEN,
            });
        }
        Ok(CookieReplyPacket { buffer })
    }
    /// The initiator's session index, copied from the initiation.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref())
    }
    /// The cookie.
    pub fn cookie(&self) -> [u8; COOKIE_LEN] {
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&self.buffer.as_ref()[4..COOKIE_REPLY_LEN]);
        c
    }
}

/// A parsed COOKIE_REPLY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReplyRepr {
    /// The initiator's session index.
    pub receiver_index: u32,
    /// The cookie to echo.
    pub cookie: [u8; COOKIE_LEN],
}

impl CookieReplyRepr {
    /// Parses a checked body.
    pub fn parse<T: AsRef<[u8]>>(p: &CookieReplyPacket<T>) -> Result<Self> {
        Ok(CookieReplyRepr {
            receiver_index: p.receiver_index(),
            cookie: p.cookie(),
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        COOKIE_REPLY_LEN
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.receiver_index.to_be_bytes());
        out.extend_from_slice(&self.cookie);
    }
}

/// A view of a HANDSHAKE_INIT_COOKIE body.
#[derive(Debug, Clone)]
pub struct CookieInitPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CookieInitPacket<T> {
    /// Wraps and checks a body: a cookie and a valid initiation body.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = buffer.as_ref().len();
        if len < COOKIE_LEN {
            return Err(WireError::Truncated {
                what: "handshake init with cookie",
                len,
            });
        }
        InitPacket::new_checked(&buffer.as_ref()[COOKIE_LEN..])?;
        Ok(CookieInitPacket { buffer })
    }
    /// The echoed cookie.
    pub fn cookie(&self) -> [u8; COOKIE_LEN] {
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(&self.buffer.as_ref()[..COOKIE_LEN]);
        c
    }
    /// The initiation body that follows the cookie.
    pub fn init_body(&self) -> &[u8] {
        &self.buffer.as_ref()[COOKIE_LEN..]
    }
}

/// A parsed HANDSHAKE_INIT_COOKIE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieInitRepr<'a> {
    /// The echoed cookie.
    pub cookie: [u8; COOKIE_LEN],
    /// The initiation.
    pub init: InitRepr<'a>,
}

impl<'a> CookieInitRepr<'a> {
    /// Parses a checked body.
    pub fn parse(p: &CookieInitPacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        let init = InitPacket::new_checked(&b[COOKIE_LEN..])?;
        Ok(CookieInitRepr {
            cookie: p.cookie(),
            init: InitRepr::parse(&init)?,
        })
    }
    /// Body length.
    pub fn buffer_len(&self) -> usize {
        COOKIE_LEN + self.init.buffer_len()
    }
    /// Appends the body to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cookie);
        self.init.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::handshake::NOISE_MIN;

    static REPLY: [u8; 20] = [
        0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
        0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    ];

    #[test]
    fn cookie_reply_parses_and_emits() {
        let p = CookieReplyPacket::new_checked(&REPLY[..]).unwrap();
        let r = CookieReplyRepr::parse(&p).unwrap();
        assert_eq!(r.receiver_index, 0xdead_beef);
        assert_eq!(r.cookie[15], 0x0f);
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, REPLY);
        assert_eq!(r.buffer_len(), out.len());
    }

    #[test]
    fn cookie_reply_of_another_length_is_refused() {
        assert!(matches!(
            CookieReplyPacket::new_checked(&REPLY[..19]),
            Err(WireError::Truncated { .. })
        ));
        let mut long = REPLY.to_vec();
        long.push(0);
        assert!(matches!(
            CookieReplyPacket::new_checked(&long[..]),
            Err(WireError::Trailing { count: 1, .. })
        ));
    }

    #[test]
    fn init_with_cookie_round_trips_and_checks_the_initiation() {
        let mut body = vec![0xaa; COOKIE_LEN];
        body.extend_from_slice(&7u32.to_be_bytes());
        body.extend_from_slice(&[0x55; NOISE_MIN]);
        let p = CookieInitPacket::new_checked(&body[..]).unwrap();
        let r = CookieInitRepr::parse(&p).unwrap();
        assert_eq!(r.cookie, [0xaa; COOKIE_LEN]);
        assert_eq!(r.init.sender_index, 7);
        assert_eq!(r.init.noise, &[0x55; NOISE_MIN][..]);
        let mut out = Vec::new();
        r.emit(&mut out);
        assert_eq!(out, body);
        // One byte short of a minimal Noise message 1.
        assert!(CookieInitPacket::new_checked(&body[..body.len() - 1]).is_err());
        assert!(CookieInitPacket::new_checked(&body[..3]).is_err());
    }
}
