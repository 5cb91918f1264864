//! SOCKS5 messages (RFC 1928) and its username/password sub-negotiation (RFC 1929), and
//! the head of an HTTP `CONNECT` request (RFC 9110, section 9.3.6), as bytes. Each `parse` takes what has arrived so far and answers `Ok(None)` while a
//! message is incomplete, `Ok(Some((message, length)))` once it is whole, and an error
//! for bytes no client may send; nothing here panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte of SOCKS5.
pub(crate) const VERSION: u8 = 5;
/// The version byte of the username/password sub-negotiation (RFC 1929).
const AUTH_VERSION: u8 = 1;

/// Authentication methods (RFC 1928, section 3).
pub(crate) mod method {
    /// No authentication required.
    pub(crate) const NONE: u8 = 0x00;
    /// Username/password (RFC 1929).
    pub(crate) const PASSWORD: u8 = 0x02;
    /// No acceptable method.
    pub(crate) const UNACCEPTABLE: u8 = 0xff;
}

/// Reply codes (RFC 1928, section 6).
pub(crate) mod reply {
    /// Succeeded.
    pub(crate) const SUCCEEDED: u8 = 0x00;
    /// General SOCKS server failure.
    pub(crate) const FAILURE: u8 = 0x01;
    /// Connection not allowed by ruleset.
    pub(crate) const NOT_ALLOWED: u8 = 0x02;
    /// Network unreachable.
    pub(crate) const NETWORK_UNREACHABLE: u8 = 0x03;
    /// Host unreachable.
    pub(crate) const HOST_UNREACHABLE: u8 = 0x04;
    /// Connection refused.
    pub(crate) const REFUSED: u8 = 0x05;
    /// Command not supported.
    pub(crate) const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    /// Address type not supported.
    pub(crate) const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

mod atyp {
    pub(super) const IPV4: u8 = 0x01;
    pub(super) const DOMAIN: u8 = 0x03;
    pub(super) const IPV6: u8 = 0x04;
}

/// Bytes that are not SOCKS5 from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The version byte is not 5 (or 1 in the password sub-negotiation).
    #[error("not SOCKS5 (version byte {0})")]
    Version(u8),
    /// A greeting that offers no method at all.
    #[error("the greeting offers no authentication method")]
    NoMethods,
    /// The reserved byte of a request is not zero.
    #[error("reserved byte is {0}, not 0")]
    Reserved(u8),
    /// An address type this server does not know (the reply says so).
    #[error("address type {0} is not supported")]
    AddressType(u8),
    /// A domain name that is empty or not text.
    #[error("the domain name is empty or not text")]
    Domain,
}

/// A client's first message: the methods it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub(crate) methods: Vec<u8>,
}

impl Greeting {
    pub(crate) fn parse(b: &[u8]) -> Result<Option<(Greeting, usize)>, WireError> {
        let Some(&version) = b.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let Some(&n) = b.get(1) else {
            return Ok(None);
        };
        if n == 0 {
            return Err(WireError::NoMethods);
        }
        let len = 2 + usize::from(n);
        match b.get(2..len) {
            Some(m) => Ok(Some((
                Greeting {
                    methods: m.to_vec(),
                },
                len,
            ))),
            None => Ok(None),
        }
    }
}

/// The server's choice of method.
pub(crate) fn method_choice(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// Username and password (RFC 1929).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) user: Vec<u8>,
    pub(crate) password: Vec<u8>,
}

impl Credentials {
    pub(crate) fn parse(b: &[u8]) -> Result<Option<(Credentials, usize)>, WireError> {
        let Some(&version) = b.first() else {
            return Ok(None);
        };
        if version != AUTH_VERSION {
            return Err(WireError::Version(version));
        }
        let Some(&ulen) = b.get(1) else {
            return Ok(None);
        };
        let user_end = 2 + usize::from(ulen);
        let Some(&plen) = b.get(user_end) else {
            return Ok(None);
        };
        let end = user_end + 1 + usize::from(plen);
        match (b.get(2..user_end), b.get(user_end + 1..end)) {
            (Some(user), Some(password)) => Ok(Some((
                Credentials {
                    user: user.to_vec(),
                    password: password.to_vec(),
                },
                end,
            ))),
            _ => Ok(None),
        }
    }
}

/// The answer to [`Credentials`]: status 0 is success.
pub(crate) fn auth_status(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An IPv4 or IPv6 address and port.
    Addr(SocketAddr),
    /// A domain name (as sent, without checks beyond "text") and port.
    Name(String, u16),
}

/// A request's command (RFC 1928, section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Connect,
    Bind,
    UdpAssociate,
    /// Any other value: answered with "command not supported".
    Other(u8),
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) target: Target,
}

impl Request {
    pub(crate) fn parse(b: &[u8]) -> Result<Option<(Request, usize)>, WireError> {
        if b.len() < 4 {
            return Ok(None);
        }
        if b[0] != VERSION {
            return Err(WireError::Version(b[0]));
        }
        let command = match b[1] {
            1 => Command::Connect,
            2 => Command::Bind,
            3 => Command::UdpAssociate,
            other => Command::Other(other),
        };
        if b[2] != 0 {
            return Err(WireError::Reserved(b[2]));
        }
        let (addr_len, start) = match b[3] {
            atyp::IPV4 => (4, 4),
            atyp::IPV6 => (16, 4),
            atyp::DOMAIN => match b.get(4) {
                Some(&0) => return Err(WireError::Domain),
                Some(&n) => (usize::from(n), 5),
                None => return Ok(None),
            },
            other => return Err(WireError::AddressType(other)),
        };
        let end = start + addr_len + 2;
        let Some(rest) = b.get(start..end) else {
            return Ok(None);
        };
        let (addr, port) = rest.split_at(addr_len);
        let port = u16::from_be_bytes([port[0], port[1]]);
        let target = match b[3] {
            atyp::IPV4 => {
                let o: [u8; 4] = addr.try_into().map_err(|_| WireError::AddressType(1))?;
                Target::Addr(SocketAddr::new(Ipv4Addr::from(o).into(), port))
            }
            atyp::IPV6 => {
                let o: [u8; 16] = addr.try_into().map_err(|_| WireError::AddressType(4))?;
                Target::Addr(SocketAddr::new(Ipv6Addr::from(o).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(addr).map_err(|_| WireError::Domain)?;
                Target::Name(name.to_owned(), port)
            }
        };
        Ok(Some((Request { command, target }, end)))
    }
}

/// A reply (RFC 1928, section 6) with the bound address `bound` (the address the
/// server uses toward the target, or unspecified).
pub(crate) fn reply(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION, code, 0];
    match bound.ip() {
        IpAddr::V4(a) => {
            out.push(atyp::IPV4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(atyp::IPV6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    out
}

/// The longest HTTP request head the proxy reads.
pub(crate) const MAX_HTTP_HEAD: usize = 8192;

/// An HTTP request head the CONNECT proxy does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    /// Not a request line of three parts, or not text.
    #[error("malformed request line")]
    Malformed,
    /// A method other than CONNECT (answered 405).
    #[error("method {0} is not CONNECT")]
    Method(String),
    /// The target is not `host:port` (answered 400).
    #[error("target {0:?} is not host:port")]
    Target(String),
    /// No end of the head within [`MAX_HTTP_HEAD`] bytes.
    #[error("request head longer than {MAX_HTTP_HEAD} bytes")]
    TooLong,
}

/// `CONNECT host:port HTTP/1.x` and its header fields up to the empty line: the target,
/// and the length of the head (what follows belongs to the tunnel).
pub(crate) fn parse_connect(b: &[u8]) -> Result<Option<(Target, usize)>, HttpError> {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if b.len() >= MAX_HTTP_HEAD {
            Err(HttpError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&b[..end]).map_err(|_| HttpError::Malformed)?;
    let line = head.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed);
    }
    if method != "CONNECT" {
        return Err(HttpError::Method(method.to_owned()));
    }
    let bad = || HttpError::Target(target.to_owned());
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    let target = match host.parse::<IpAddr>() {
        Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
        Err(_) => Target::Name(host.to_owned(), port),
    };
    Ok(Some((target, end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_connect_heads() {
        let b = b"CONNECT web.zt:443 HTTP/1.1\r\nHost: web.zt:443\r\n\r\nTLS";
        let (t, n) = parse_connect(b).unwrap().unwrap();
        assert_eq!((t, n), (Target::Name("web.zt".into(), 443), b.len() - 3));
        for cut in 0..b.len() - 3 {
            assert_eq!(parse_connect(&b[..cut]), Ok(None), "{cut}");
        }
        let (t, _) = parse_connect(b"CONNECT [fd00::1]:80 HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(t, Target::Addr("[fd00::1]:80".parse().unwrap()));
        assert_eq!(
            parse_connect(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Err(HttpError::Method("GET".into()))
        );
        for bad in [
            &b"CONNECT x HTTP/1.1\r\n\r\n"[..],
            b"CONNECT :80 HTTP/1.1\r\n\r\n",
            b"CONNECT x:0 HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse_connect(bad), Err(HttpError::Target(_))));
        }
        assert_eq!(parse_connect(b"CONNECT\r\n\r\n"), Err(HttpError::Malformed));
        assert_eq!(
            parse_connect(&[b'a'; MAX_HTTP_HEAD]),
            Err(HttpError::TooLong)
        );
    }

    #[test]
    fn greeting_parses_when_whole() {
        let b = [5, 2, 0, 2, 0xaa];
        assert_eq!(
            Greeting::parse(&b).unwrap(),
            Some((
                Greeting {
                    methods: vec![0, 2]
                },
                4
            ))
        );
        for cut in 0..4 {
            assert_eq!(Greeting::parse(&b[..cut]).unwrap(), None, "{cut}");
        }
        assert_eq!(Greeting::parse(&[4, 1, 0]), Err(WireError::Version(4)));
        assert_eq!(Greeting::parse(&[5, 0]), Err(WireError::NoMethods));
    }

    #[test]
    fn requests_of_each_address_type() {
        // CONNECT 100.64.1.2:8080
        let v4 = [5, 1, 0, 1, 100, 64, 1, 2, 0x1f, 0x90];
        let (r, n) = Request::parse(&v4).unwrap().unwrap();
        assert_eq!(n, v4.len());
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, Target::Addr("100.64.1.2:8080".parse().unwrap()));
        // CONNECT [fd00::1]:443
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[1, 0xbb]);
        let (r, _) = Request::parse(&v6).unwrap().unwrap();
        assert_eq!(r.target, Target::Addr("[fd00::1]:443".parse().unwrap()));
        // UDP ASSOCIATE web.zt:53
        let mut d = vec![5, 3, 0, 3, 6];
        d.extend_from_slice(b"web.zt");
        d.extend_from_slice(&[0, 53]);
        let (r, n) = Request::parse(&d).unwrap().unwrap();
        assert_eq!((r.command, n), (Command::UdpAssociate, d.len()));
        assert_eq!(r.target, Target::Name("web.zt".into(), 53));
        for cut in 0..d.len() {
            assert_eq!(Request::parse(&d[..cut]).unwrap(), None, "{cut}");
        }
    }

    #[test]
    fn bad_requests_are_refused_without_panic() {
        assert_eq!(
            Request::parse(&[5, 1, 0, 9, 0, 0]),
            Err(WireError::AddressType(9))
        );
        assert_eq!(Request::parse(&[5, 1, 7, 1]), Err(WireError::Reserved(7)));
        assert_eq!(Request::parse(&[5, 1, 0, 3, 0]), Err(WireError::Domain));
        assert_eq!(
            Request::parse(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]),
            Err(WireError::Domain)
        );
        let (r, _) = Request::parse(&[5, 9, 0, 1, 1, 2, 3, 4, 0, 1])
            .unwrap()
            .unwrap();
        assert_eq!(r.command, Command::Other(9));
        // Every prefix of every byte string up to 3 bytes, and random longer ones.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 * 3) & 0xff) as u8)
                .collect();
            let _ = Request::parse(&bytes);
            let _ = Greeting::parse(&bytes);
            let _ = Credentials::parse(&bytes);
        }
    }

    #[test]
    fn credentials_and_replies() {
        let b = [1, 3, b'b', b'o', b'b', 2, b'p', b'w'];
        let (c, n) = Credentials::parse(&b).unwrap().unwrap();
        assert_eq!(
            (c.user.as_slice(), c.password.as_slice(), n),
            (&b"bob"[..], &b"pw"[..], 8)
        );
        for cut in 0..b.len() {
            assert_eq!(Credentials::parse(&b[..cut]).unwrap(), None);
        }
        assert_eq!(auth_status(true), [1, 0]);
        assert_eq!(auth_status(false), [1, 1]);
        assert_eq!(method_choice(method::NONE), [5, 0]);
        assert_eq!(
            reply(reply::SUCCEEDED, "100.64.1.2:4000".parse().unwrap()),
            [5, 0, 0, 1, 100, 64, 1, 2, 0x0f, 0xa0]
        );
        let r = reply(reply::REFUSED, "[::]:0".parse().unwrap());
        assert_eq!((r.len(), r[1], r[3]), (22, 5, 4));
    }
}
