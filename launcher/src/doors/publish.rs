//! `--publish [HOSTADDR:]PORT[/udp]`: a host-side socket whose traffic goes to the node's
//! own virtual address on PORT (the stack delivers to its own addresses itself).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DoorError, Doors, PublishArg};

/// How long a UDP flow (one host-side peer) lives without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(120);

/// Bind the host side of `arg` now (so that a taken port is reported at start) and
/// serve it in the background for as long as the runtime runs.
pub async fn publish(doors: &Doors, arg: PublishArg) -> Result<(), DoorError> {
    let listen_err = |source| DoorError::Listen {
        addr: arg.host,
        what: format!("--publish {arg}"),
        source,
    };
    if doors.own_addresses().is_empty() {
        return Err(DoorError::NoAddress);
    }
    if arg.udp {
        let sock = tokio::net::UdpSocket::bind(arg.host)
            .await
            .map_err(listen_err)?;
        tokio::spawn(udp(doors.clone(), Arc::new(sock), arg.host.port()));
    } else {
        let listener = tokio::net::TcpListener::bind(arg.host)
            .await
            .map_err(listen_err)?;
        tokio::spawn(tcp(doors.clone(), listener, arg.host.port()));
    }
    Ok(())
}

async fn tcp(doors: Doors, listener: tokio::net::TcpListener, port: u16) {
    loop {
        let (mut conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait for descriptors to come back.
                tracing::warn!(%e, port, "published port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let doors = doors.clone();
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let mut last = None;
            for (stack, ip) in doors.own_addresses() {
                match stack
                    .tcp_connect(None, SocketAddr::new(ip, port), nodelay())
                    .await
                {
                    Ok(mut v) => {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut v).await;
                        return;
                    }
                    Err(e) => last = Some(e),
                }
            }
            tracing::info!(%peer, port, ?last, "published port: nothing listens on the virtual side");
        });
    }
}

fn nodelay() -> netstack::TcpOptions {
    netstack::TcpOptions {
        nodelay: true,
        ..Default::default()
    }
}

/// One host-side peer's datagrams: a virtual socket of its own, so that replies find it.
struct Flow {
    socket: Arc<netstack::UdpSocket>,
    last: Mutex<Instant>,
}

async fn udp(doors: Doors, host: Arc<tokio::net::UdpSocket>, port: u16) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>> = Arc::default();
    let Some((stack, ip)) = doors.own_addresses().into_iter().next() else {
        return;
    };
    let target = SocketAddr::new(ip, port);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match host.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, port, "published UDP port: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let existing = flows.lock().ok().and_then(|f| f.get(&peer).cloned());
        let flow = match existing {
            Some(f) => f,
            None => match stack.udp_bind(SocketAddr::new(ip, 0), false) {
                Ok(s) => {
                    let flow = Arc::new(Flow {
                        socket: Arc::new(s),
                        last: Mutex::new(Instant::now()),
                    });
                    if let Ok(mut f) = flows.lock() {
                        f.insert(peer, flow.clone());
                    }
                    tokio::spawn(replies(flow.clone(), host.clone(), peer, flows.clone()));
                    flow
                }
                Err(e) => {
                    tracing::warn!(%e, %peer, port, "published UDP port: no virtual socket");
                    continue;
                }
            },
        };
        if let Ok(mut l) = flow.last.lock() {
            *l = Instant::now();
        }
        let _ = flow.socket.send_to(&buf[..n], target).await;
    }
}

/// Carry the program's answers back to `peer` until the flow has been idle for
/// [`UDP_IDLE`].
async fn replies(
    flow: Arc<Flow>,
    host: Arc<tokio::net::UdpSocket>,
    peer: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), flow.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                if let Ok(mut l) = flow.last.lock() {
                    *l = Instant::now();
                }
                let _ = host.send_to(&buf[..n], peer).await;
            }
            Ok(Err(_)) => break,
            Err(_) => {
                let idle = flow.last.lock().map(|l| l.elapsed()).unwrap_or(UDP_IDLE);
                if idle >= UDP_IDLE {
                    break;
                }
            }
        }
    }
    if let Ok(mut f) = flows.lock() {
        f.remove(&peer);
    }
}
