//! The controller's management API as both ends see it: the JSON documents, where a
//! client finds the API and its token, and the small HTTP/1.1 client behind `zt net` and
//! `zt member`.
//!
//! The API is JSON over HTTP/1.1, bound to loopback only, in the spirit of ZeroTier's
//! controller API. Every request carries the token from `<controller home>/authtoken.secret`
//! in an `X-ZT-Auth: TOKEN` or `Authorization: Bearer TOKEN` header.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/controller` | | [`ControllerInfo`] |
//! | GET | `/controller/network` | | `[`[`NetworkJson`]`]` |
//! | POST | `/controller/network` | [`NetworkChange`] | the new [`NetworkJson`] (random number) |
//! | GET | `/controller/network/{nwid}` | | [`NetworkJson`] |
//! | POST | `/controller/network/{nwid}` | [`NetworkChange`] | [`NetworkJson`] (created or changed) |
//! | DELETE | `/controller/network/{nwid}` | | the deleted [`NetworkJson`] |
//! | GET | `/controller/network/{nwid}/member` | | `[`[`MemberJson`]`]` |
//! | GET | `/controller/network/{nwid}/member/{node}` | | [`MemberJson`] |
//! | POST | `/controller/network/{nwid}/member/{node}` | [`MemberChange`] | [`MemberJson`] |
//! | DELETE | `/controller/network/{nwid}/member/{node}` | | the deleted [`MemberJson`] (deauthorized first) |
//!
//! Errors answer `{"error": "..."}` with 400 (malformed request), 401 (no or wrong token),
//! 404 (unknown network, member or path), 405 (method), 408 (body not in within 10 s),
//! 413 (body over 64 KiB) or 500; after 401, 408 and 413 the server closes the connection.
//! What a connection may cost the server is in [`crate::connections`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// File in the controller's home holding the API token (mode 0600).
pub const TOKEN_FILE: &str = "authtoken.secret";
/// File in the controller's home holding the address the API listens on.
pub const API_FILE: &str = "controller.api";
/// Where the API listens unless told otherwise.
pub const DEFAULT_API: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9994));
/// The token header (ZeroTier's name).
pub const AUTH_HEADER: &str = "x-zt-auth";
/// Largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /controller`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerInfo {
    /// Always true (ZeroTier's field).
    pub controller: bool,
    /// The controller's node address: the first 10 hex digits of its network IDs.
    pub address: String,
    /// Version of `zt`.
    pub version: String,
    /// The controller's clock, ms since the Unix epoch.
    pub clock: u64,
}

/// An IPv4 assignment pool: members get addresses from `start` to `end`, on a subnet of
/// `prefix` bits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Pool {
    /// First address handed out.
    pub start: Ipv4Addr,
    /// Last address handed out.
    pub end: Ipv4Addr,
    /// Prefix length of the members' subnet.
    pub prefix: u8,
}

impl Ipv4Pool {
    /// The pool of a subnet in CIDR form (`10.147.17.0/24`): every address but the
    /// subnet's first and last (all of them for /31 and /32).
    pub fn from_cidr(cidr: &str) -> Result<Self, String> {
        let (ip, prefix) = parse_cidr(cidr)?;
        let IpAddr::V4(ip) = ip else {
            return Err(format!("{cidr} is not an IPv4 subnet"));
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let net = u32::from(ip) & mask;
        let last = net | !mask;
        let (start, end) = if prefix >= 31 {
            (net, last)
        } else {
            (net + 1, last - 1)
        };
        Ok(Ipv4Pool {
            start: start.into(),
            end: end.into(),
            prefix,
        })
    }
}

impl std::fmt::Display for Ipv4Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}/{}", self.start, self.end, self.prefix)
    }
}

/// Which IPv6 addresses members get.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct V6AssignMode {
    /// The RFC 4193 address `fd ‖ nwid ‖ 99 93 ‖ node`.
    pub rfc4193: bool,
    /// A 6plane-style /80 per member.
    #[serde(rename = "6plane")]
    pub sixplane: bool,
}

/// A route pushed to members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteJson {
    /// Destination in CIDR form, e.g. `10.0.0.0/8`.
    pub target: String,
    /// Gateway on the virtual network, or null for an on-link route.
    #[serde(default)]
    pub via: Option<IpAddr>,
}

/// A network as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkJson {
    /// Network ID, 16 hex digits.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Private networks admit authorized members only.
    pub private: bool,
    /// MTU of the virtual Ethernet.
    pub mtu: u16,
    /// IPv4 pool, if members get IPv4 addresses.
    pub ipv4_pool: Option<Ipv4Pool>,
    /// IPv6 assignment.
    pub v6_assign_mode: V6AssignMode,
    /// Routes pushed to members.
    pub routes: Vec<RouteJson>,
    /// Members known (authorized or not).
    pub member_count: usize,
    /// Authorized members.
    pub authorized_member_count: usize,
}

/// The body of `POST /controller/network[/{nwid}]`: fields to set; absent fields keep
/// their value (or the default for a new network: private, MTU 9000, RFC 4193 IPv6, no
/// IPv4 pool).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkChange {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Private or public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// MTU (1280..=10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// IPv4 pool; `null` removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_pool: Option<Option<Ipv4Pool>>,
    /// IPv6 assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6_assign_mode: Option<V6AssignMode>,
    /// Routes (replace the list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteJson>>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`, by `default`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A member as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberJson {
    /// The member's node address.
    pub id: String,
    /// The network.
    pub nwid: String,
    /// Whether it may have a configuration.
    pub authorized: bool,
    /// Its addresses on the network (IPv4 once assigned, IPv6 derived).
    pub ip_assignments: Vec<IpAddr>,
    /// When it last asked for its configuration, ms since the Unix epoch.
    pub last_request: Option<u64>,
    /// Its DNS name on the network (`<name>.<nwid>.zt` inside `ztrun`).
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it asked for its configuration within the last 65 s: members ask every
    /// 30 s while they run, so this is what the controller knows of who is online.
    #[serde(default)]
    pub online: bool,
}

/// The body of `POST /controller/network/{nwid}/member/{node}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberChange {
    /// Authorize (true) or deauthorize (false, which revokes its certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<bool>,
    /// Name the member in DNS (a DNS label, unique on the network); `null` removes its
    /// name, absent leaves it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<Option<String>>,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorJson {
    /// What went wrong, for a person.
    pub error: String,
}

/// Parses `ADDRESS/PREFIX`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{s:?} is not ADDRESS/PREFIX (e.g. 10.147.17.0/24 or fd00::/64)");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("{s}: prefix longer than {max} bits"));
    }
    Ok((ip, prefix))
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token could not be read.
    #[error(
        "cannot read the API token {} (has `zt controller` run with this --home? are you \
         its user? --token gives the token directly)",
        file.display()
    )]
    Token {
        /// The token file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The API address file is malformed.
    #[error("{} does not hold an IP:PORT address; pass --api IP:PORT", file.display())]
    AddressFile {
        /// The file.
        file: PathBuf,
    },
    /// Nobody answers at the address.
    #[error("cannot reach the controller API at {addr}: {reason} — is `zt controller` running?")]
    Connect {
        /// The API address.
        addr: SocketAddr,
        /// Why, in words.
        reason: String,
    },
    /// The exchange failed half-way.
    #[error("the HTTP exchange with the controller API at {addr} failed")]
    Http {
        /// The API address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the controller API at {addr} did not answer within 10 s")]
    Timeout {
        /// The API address.
        addr: SocketAddr,
    },
    /// The request could not be formed (a path or token with characters HTTP refuses).
    #[error("cannot form the API request")]
    Request {
        /// The cause.
        #[source]
        source: hyper::http::Error,
    },
    /// The token was refused.
    #[error(
        "the controller API at {addr} refused the token (401): use the token of that \
         controller ({TOKEN_FILE} in its home, or --token)"
    )]
    Unauthorized {
        /// The API address.
        addr: SocketAddr,
    },
    /// Any other error answer.
    #[error("the controller answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The answer is not the JSON expected.
    #[error("the controller's answer is not the expected JSON")]
    Decode {
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// A client of one controller's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    token: String,
}

impl ApiClient {
    /// A client of the API at `addr` with `token`.
    pub fn new(addr: SocketAddr, token: String) -> Self {
        ApiClient { addr, token }
    }

    /// The client for the controller whose home is `home`: the address is `api`, else the
    /// one the running controller wrote into `<home>/controller.api`, else
    /// [`DEFAULT_API`]; the token is `token`, else `<home>/authtoken.secret`.
    pub fn locate(
        home: &Path,
        api: Option<SocketAddr>,
        token: Option<String>,
    ) -> Result<Self, ApiError> {
        let addr = match api {
            Some(a) => a,
            None => {
                let file = home.join(API_FILE);
                match std::fs::read_to_string(&file) {
                    Ok(text) => text
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::AddressFile { file })?,
                    Err(_) => DEFAULT_API,
                }
            }
        };
        let token = match token {
            Some(t) => t,
            None => {
                let file = home.join(TOKEN_FILE);
                std::fs::read_to_string(&file)
                    .map_err(|source| ApiError::Token { file, source })?
                    .trim()
                    .to_string()
            }
        };
        Ok(ApiClient::new(addr, token))
    }

    /// The API address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let body = serde_json::to_vec(body).map_err(|source| ApiError::Decode { source })?;
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ApiError::Unauthorized { addr: self.addr });
        }
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorJson>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ApiError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode { source })
    }

    /// One request; returns the status and the body.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let addr = self.addr;
        let exchange = async {
            let stream =
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| ApiError::Connect {
                        addr,
                        reason: io_reason(&e),
                    })?;
            let http = |source| ApiError::Http { addr, source };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(http)?;
            let conn = tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(AUTH_HEADER, &self.token);
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|source| ApiError::Request { source })?;
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
            conn.abort();
            Ok((status, bytes))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| ApiError::Timeout { addr })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_from_cidr() {
        let p = Ipv4Pool::from_cidr("10.147.17.0/24").unwrap();
        assert_eq!(p.to_string(), "10.147.17.1-10.147.17.254/24");
        let p = Ipv4Pool::from_cidr("10.0.0.5/31").unwrap();
        assert_eq!(p.to_string(), "10.0.0.4-10.0.0.5/31");
        assert!(Ipv4Pool::from_cidr("fd00::/64").is_err());
        assert!(Ipv4Pool::from_cidr("10.0.0.0/33").is_err());
        assert!(Ipv4Pool::from_cidr("10.0.0.0").is_err());
    }

    #[test]
    fn network_change_tells_null_from_absent() {
        let c: NetworkChange = serde_json::from_str(r#"{"ipv4Pool": null}"#).unwrap();
        assert_eq!(c.ipv4_pool, Some(None));
        let c: NetworkChange = serde_json::from_str(r#"{"name": "lab"}"#).unwrap();
        assert_eq!(c.ipv4_pool, None);
        assert_eq!(c.name.as_deref(), Some("lab"));
        assert!(serde_json::from_str::<NetworkChange>(r#"{"nmae": "lab"}"#).is_err());
        let back: NetworkChange =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn missing_token_names_the_file_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = ApiClient::locate(dir.path(), None, None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(TOKEN_FILE) && text.contains("--token"),
            "{text}"
        );
        let c = ApiClient::locate(dir.path(), None, Some("t".into())).unwrap();
        assert_eq!(c.addr(), DEFAULT_API);
    }

    #[tokio::test]
    async fn refused_connection_says_what_to_start() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = ApiClient::new(port, "t".into());
        let err = c.get::<ControllerInfo>("/controller").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the controller API at {port}: connection refused — is `zt \
                 controller` running?"
            )
        );
    }
}
