//! The SOCKS5 door (RFC 1928 CONNECT; RFC 1929 username/password off loopback).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wire::{self, method, reply, Command, Credentials, Greeting, Request, WireError};
use super::{DoorError, Doors, Unreached};

/// The greeting, authentication and request must arrive within this time.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// The longest handshake message (a request with a 255-byte name is 262 bytes; the
/// credentials at most 513).
const MAX_MESSAGE: usize = 600;

/// Where the door listens and whom it admits.
#[derive(Clone)]
pub struct SocksConfig {
    /// The listening address.
    pub listen: SocketAddr,
    /// Username and password clients must give; `None`: no authentication (loopback only).
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SocksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksConfig")
            .field("listen", &self.listen)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Bind the door now and serve it in the background for as long as the runtime runs.
/// Refuses a non-loopback address without credentials.
pub async fn serve_socks5(doors: &Doors, config: SocksConfig) -> Result<SocketAddr, DoorError> {
    if !config.listen.ip().is_loopback() && config.credentials.is_none() {
        return Err(DoorError::NeedsCredentials(config.listen));
    }
    let doors = doors.clone();
    let credentials = config.credentials;
    super::serve_each(config.listen, ("--socks5", "SOCKS5"), move |conn| {
        let doors = doors.clone();
        let credentials = credentials.clone();
        async move { session(&doors, conn, credentials.as_ref()).await }
    })
    .await
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client sent no SOCKS5: {0}")]
    Wire(#[from] WireError),
    #[error("handshake message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("handshake not finished within {HANDSHAKE:?}")]
    Slow,
    #[error("{0}")]
    Refused(&'static str),
}

/// Read one message with `parse`, keeping bytes beyond it in `buf`.
async fn read_message<T>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>,
) -> Result<T, SessionError> {
    loop {
        if let Some((m, n)) = parse(buf)? {
            buf.drain(..n);
            return Ok(m);
        }
        if buf.len() >= MAX_MESSAGE {
            return Err(SessionError::TooLong);
        }
        let mut chunk = [0u8; 512];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Equal without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// The reply code for a failed connection (RFC 1928, section 6).
fn reply_code(e: &netstack::Error) -> u8 {
    match e.errno() {
        libc::ECONNREFUSED => reply::REFUSED,
        libc::ENETUNREACH => reply::NETWORK_UNREACHABLE,
        libc::EHOSTUNREACH | libc::ETIMEDOUT => reply::HOST_UNREACHABLE,
        _ => reply::FAILURE,
    }
}

/// Greeting, authentication, request: the connected stream, or the reply already sent.
async fn handshake(
    doors: &Doors,
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    credentials: Option<&(String, String)>,
) -> Result<netstack::TcpStream, SessionError> {
    let greeting = read_message(conn, buf, Greeting::parse).await?;
    let wanted = if credentials.is_some() {
        method::PASSWORD
    } else {
        method::NONE
    };
    if !greeting.methods.contains(&wanted) {
        conn.write_all(&wire::method_choice(method::UNACCEPTABLE))
            .await?;
        return Err(SessionError::Refused("no acceptable authentication method"));
    }
    conn.write_all(&wire::method_choice(wanted)).await?;
    if let Some((user, password)) = credentials {
        let c = read_message(conn, buf, Credentials::parse).await?;
        // Both compared, whatever the first gives.
        let ok = same(&c.user, user.as_bytes()) & same(&c.password, password.as_bytes());
        conn.write_all(&wire::auth_status(ok)).await?;
        if !ok {
            return Err(SessionError::Refused("wrong username or password"));
        }
    }
    let request = match read_message(conn, buf, Request::parse).await {
        Err(SessionError::Wire(WireError::AddressType(_))) => {
            conn.write_all(&wire::reply(reply::ADDRESS_TYPE_NOT_SUPPORTED, UNSPECIFIED))
                .await?;
            return Err(SessionError::Refused("address type not supported"));
        }
        r => r?,
    };
    if request.command != Command::Connect {
        conn.write_all(&wire::reply(reply::COMMAND_NOT_SUPPORTED, UNSPECIFIED))
            .await?;
        return Err(SessionError::Refused("only CONNECT is supported"));
    }
    let code = match doors.connect(&request.target).await {
        Ok(v) => {
            conn.write_all(&wire::reply(reply::SUCCEEDED, v.local_addr()))
                .await?;
            return Ok(v);
        }
        Err(Unreached::UnknownName) => reply::HOST_UNREACHABLE,
        Err(Unreached::NotVirtual) => reply::NOT_ALLOWED,
        Err(Unreached::Failed(e)) => reply_code(&e),
    };
    conn.write_all(&wire::reply(code, UNSPECIFIED)).await?;
    Err(SessionError::Refused("no target reachable"))
}

async fn session(
    doors: &Doors,
    mut conn: TcpStream,
    credentials: Option<&(String, String)>,
) -> Result<(), SessionError> {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut virt = tokio::time::timeout(
        HANDSHAKE,
        handshake(doors, &mut conn, &mut buf, credentials),
    )
    .await
    .map_err(|_| SessionError::Slow)??;
    // Bytes the client sent right behind its request belong to the connection.
    if !buf.is_empty() {
        virt.write_all(&buf).await?;
    }
    tokio::io::copy_bidirectional(&mut conn, &mut virt).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(same(b"", b""));
    }
}
