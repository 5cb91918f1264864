//! The scenarios, one module per family. Each scenario function starts its servers on
//! member 1, runs its clients on member 2 and checks real results; `docs/COMPAT.md`
//! describes each one.

mod data;
mod net;
mod runtimes;
mod ssh;
mod web;

use std::net::SocketAddr;

use super::stage::Stage;
use super::Scenario;

/// `ADDR:PORT` of the server member, bracketed for IPv6.
fn server_at(stage: &Stage<'_, '_>, port: u16) -> String {
    SocketAddr::new(stage.server_addr(), port).to_string()
}

/// Every scenario, in table order.
pub(super) static ALL: &[Scenario] = &[
    Scenario {
        name: "ssh",
        title: "OpenSSH sshd + ssh, sftp, scp",
        programs: &[
            "/usr/sbin/sshd",
            "ssh",
            "sftp",
            "scp",
            "ssh-keygen",
            "unshare",
            "setpriv",
        ],
        packages: &["openssh-server", "openssh-client"],
        summary: "unprivileged sshd on port 2222 with its own host key; ssh runs a remote \
                  command, scp uploads and sftp downloads a 50 MB file, checksums compared",
        run: ssh::ssh,
    },
    Scenario {
        name: "apache-prefork",
        title: "Apache httpd (prefork MPM) + curl",
        programs: &["/usr/sbin/apache2", "curl"],
        packages: &["apache2-bin", "curl"],
        summary: "apache2 with mpm_prefork on port 8080 from a generated config; curl fetches \
                  a 1 MB file 20 times over keep-alive, checksums compared",
        run: web::apache_prefork,
    },
    Scenario {
        name: "apache-event",
        title: "Apache httpd (event MPM) + curl",
        programs: &["/usr/sbin/apache2", "curl"],
        packages: &["apache2-bin", "curl"],
        summary: "apache2 with mpm_event on port 8080 from a generated config; curl fetches \
                  a 1 MB file 20 times over keep-alive, checksums compared",
        run: web::apache_event,
    },
    Scenario {
        name: "nginx",
        title: "nginx (master + 2 workers) + curl",
        programs: &["/usr/sbin/nginx", "curl"],
        packages: &["nginx", "curl"],
        summary: "nginx master with 2 workers serves a static file and reverse-proxies to a \
                  second nginx on the client member; curl checks both",
        run: web::nginx,
    },
    Scenario {
        name: "node",
        title: "Node.js http server + client",
        programs: &["node"],
        packages: &["nodejs"],
        summary: "an http.createServer script hashes POSTed bodies; a node http client \
                  posts 20 random bodies over one keep-alive agent and checks each hash",
        run: runtimes::node,
    },
    Scenario {
        name: "java",
        title: "Java com.sun.net.httpserver + java.net.http",
        programs: &["java"],
        packages: &["openjdk-*-jdk-headless"],
        summary: "single-file source programs run with `java File.java`: an HttpServer that \
                  hashes POSTed bodies, an HttpClient that posts 20 and checks each hash",
        run: runtimes::java,
    },
    Scenario {
        name: "redis",
        title: "Redis server + redis-cli, redis-benchmark",
        programs: &["redis-server", "redis-cli", "redis-benchmark"],
        packages: &["redis-server", "redis-tools"],
        summary: "redis-server on port 6380 without persistence; redis-cli SET/GET/INCR/RPUSH \
                  with answers checked, then a 20 000-request redis-benchmark",
        run: data::redis,
    },
    Scenario {
        name: "postgresql",
        title: "PostgreSQL server + psql",
        programs: &["psql"],
        packages: &["postgresql-[0-9]*", "postgresql-client-[0-9]*"],
        summary: "initdb into the scenario directory as uid 65534, postgres on port 5433 with \
                  SCRAM password auth; psql creates a database and table, inserts 1000 rows \
                  and checks a SELECT",
        run: data::postgresql,
    },
    Scenario {
        name: "memcached",
        title: "memcached (TCP and UDP)",
        programs: &["memcached", "python3"],
        packages: &["memcached"],
        summary: "memcached with TCP and UDP on port 11311; a Python text-protocol client \
                  sets and gets over TCP and over UDP (with the 8-byte UDP frame header)",
        run: data::memcached,
    },
    Scenario {
        name: "go",
        title: "Go static server + client (net/http, UDP)",
        programs: &["go"],
        packages: &["golang-go", "golang-[0-9]*-go"],
        summary: "a server and a client compiled at run time with CGO_ENABLED=0 (checked \
                  static): 50 HTTP requests over one keep-alive connection and 20 UDP echoes",
        run: runtimes::go,
    },
    Scenario {
        name: "python",
        title: "Python http.server + urllib",
        programs: &["python3"],
        packages: &["python3"],
        summary: "python3 -m http.server serves a 4 MB file; a urllib client fetches it 3 \
                  times, checksums compared",
        run: runtimes::python,
    },
    Scenario {
        name: "iperf3",
        title: "iperf3 (TCP and UDP)",
        programs: &["iperf3"],
        packages: &["iperf3"],
        summary: "iperf3 server; a 3 s TCP test and a 3 s 100 Mbit/s UDP test, results read \
                  from iperf3's JSON",
        run: net::iperf3,
    },
    Scenario {
        name: "dnsmasq",
        title: "dnsmasq + dig (DNS over UDP and TCP)",
        programs: &["dnsmasq", "dig"],
        packages: &["dnsmasq-base", "bind9-dnsutils"],
        summary: "dnsmasq on port 10053 answering from a hosts file; dig asks for A over UDP, \
                  A and AAAA over TCP, answers checked",
        run: net::dnsmasq,
    },
    Scenario {
        name: "ipv6",
        title: "IPv6: Python http.server + urllib, ping -6",
        programs: &["python3", "ping", "setpriv"],
        packages: &["python3", "iputils-ping"],
        summary: "the python and ping checks over the members' IPv6 addresses: a dual-stack \
                  http.server, a 1 MB fetch to [ADDR6] with its checksum, 5 ICMPv6 echoes",
        run: runtimes::ipv6,
    },
    Scenario {
        name: "ping",
        title: "ping (ICMP echo)",
        programs: &["ping", "setpriv"],
        packages: &["iputils-ping"],
        summary: "ping with no_new_privs (so its file capability is ignored and it uses an \
                  unprivileged ICMP socket) sends 10 echo requests to the server member",
        run: net::ping,
    },
];
