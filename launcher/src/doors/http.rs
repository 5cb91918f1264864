//! The HTTP CONNECT door (RFC 9110, section 9.3.6): a tunnel to a member for programs
//! that know HTTP proxies. Loopback only: it asks no credentials.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wire::{self, HttpError};
use super::{DoorError, Doors, Unreached};

/// The request head must arrive within this time.
const HEAD: Duration = Duration::from_secs(10);

/// Bind the door now and serve it in the background; a non-loopback address is refused.
pub async fn serve_http_connect(
    doors: &Doors,
    listen: SocketAddr,
) -> Result<SocketAddr, DoorError> {
    if !listen.ip().is_loopback() {
        return Err(DoorError::HttpOffLoopback(listen));
    }
    let doors = doors.clone();
    super::serve_each(listen, ("--http-proxy", "HTTP CONNECT"), move |conn| {
        let doors = doors.clone();
        async move { tunnel(&doors, conn).await }
    })
    .await
}

/// A response without a body.
fn status(code: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

async fn tunnel(doors: &Doors, mut conn: TcpStream) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let head = tokio::time::timeout(HEAD, async {
        loop {
            match wire::parse_connect(&buf) {
                Ok(Some(r)) => return Ok(Ok(r)),
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
            let mut chunk = [0u8; 2048];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let (target, len) = match head {
        Ok(t) => t,
        Err(HttpError::Method(_)) => {
            let mut r = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: CONNECT\r\n".to_vec();
            r.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
            return conn.write_all(&r).await;
        }
        Err(HttpError::TooLong) => {
            return conn
                .write_all(&status(431, "Request Header Fields Too Large"))
                .await
        }
        Err(_) => return conn.write_all(&status(400, "Bad Request")).await,
    };
    let mut virt = match doors.connect(&target).await {
        Ok(v) => v,
        Err(Unreached::UnknownName) => return conn.write_all(&status(502, "Unknown Member")).await,
        Err(Unreached::NotVirtual) => {
            return conn
                .write_all(&status(403, "Not On The Virtual Network"))
                .await
        }
        Err(Unreached::Failed(e)) if e.errno() == libc::ETIMEDOUT => {
            return conn.write_all(&status(504, "Gateway Timeout")).await
        }
        Err(Unreached::Failed(_)) => return conn.write_all(&status(502, "Bad Gateway")).await,
    };
    conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    // Bytes the client sent behind its head belong to the tunnel.
    if buf.len() > len {
        virt.write_all(&buf[len..]).await?;
    }
    tokio::io::copy_bidirectional(&mut conn, &mut virt).await?;
    Ok(())
}
