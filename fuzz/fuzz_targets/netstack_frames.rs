#![no_main]
//! Ethernet frames from the virtual network into a stack that listens on TCP, UDP and
//! ICMP: netstack's own parsers (Ethernet, ARP, NDP, IPv4/IPv6, TCP ports, UDP, ICMP),
//! its demultiplexing and connection bookkeeping, and smoltcp behind them. The input is
//! a sequence of frames, each a 2-byte big-endian length and that many bytes; each
//! frame is given, in one batch, to `FrameLink::receive`, then the stack's answers are
//! drained. A panic anywhere is a finding.
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use netstack::{IpFamily, Stack, StackConfig};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut config = StackConfig::new([0x02, 0, 0, 0, 0, 0x02]);
        config.ipv4.push((Ipv4Addr::new(10, 7, 0, 2), 24));
        config.ipv6.push(("fd7a::2".parse().unwrap(), 64));
        let (stack, link) = Stack::new(config);
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let _tcp = stack.tcp_listen(SocketAddr::new(any.ip(), 80), 4, false);
        let _tcp6 = stack.tcp_listen("[::]:81".parse().unwrap(), 4, true);
        let _udp = stack.udp_bind(SocketAddr::new(any.ip(), 53), false);
        let _icmp = stack.icmp_bind(IpFamily::V4, Some(7));
        let mut frames = Vec::new();
        let mut rest = data;
        while rest.len() >= 2 {
            let n = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            frames.push(rest[2..2 + n].to_vec());
            rest = &rest[2 + n..];
        }
        // One frame at a time: later frames see the state earlier ones made.
        let mut answers = Vec::new();
        for f in frames {
            link.receive(&mut vec![f]);
            while link.try_recv_many(&mut answers, 64) > 0 {
                answers.clear();
            }
        }
        drop(stack);
        // Let the stack's driver task see it gone and end (tasks would pile up).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    });
});
