//! Data stores: Redis, PostgreSQL, memcached.

use std::path::PathBuf;
use std::time::Duration;

use crate::matrix::stage::{expect_eq, MatrixError, Side, Stage, Who};
use crate::matrix::{Finding, CLIENT_TIMEOUT, SERVER_TIMEOUT};

pub(super) fn redis(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const PORT: &str = "6380";
    let dir = stage.dir().display().to_string();
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "redis-server",
        [
            "--port",
            PORT,
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
            "--daemonize",
            "no",
            "--logfile",
            "",
        ],
    );
    stage.start_server("redis-server", server)?;
    stage.wait_tcp("redis-server", Side::Server, 6380, SERVER_TIMEOUT)?;
    let addr = stage.server_addr().to_string();
    let value = format!(
        "value-{}",
        &stage.dir().display().to_string().replace('/', "_")
    );
    let steps: [(&[&str], String); 6] = [
        (&["SET", "matrix:key", &value], "OK".into()),
        (&["GET", "matrix:key"], value.clone()),
        (&["INCRBY", "matrix:n", "41"], "41".into()),
        (&["INCR", "matrix:n"], "42".into()),
        (&["RPUSH", "matrix:list", "a", "b", "c"], "3".into()),
        (&["LRANGE", "matrix:list", "0", "-1"], "a\nb\nc".into()),
    ];
    for (command, want) in steps {
        let mut args = vec!["-h", &addr, "-p", PORT];
        args.extend_from_slice(command);
        let mut cli = stage.command(Side::Client, &Who::Nobody, "redis-cli", &args);
        let what = format!("redis-cli {}", command.join(" "));
        let ran = stage.run_ok(&what, &mut cli, CLIENT_TIMEOUT)?;
        expect_eq(&what, ran.stdout.trim(), &want)?;
    }
    let mut bench = stage.command(
        Side::Client,
        &Who::Nobody,
        "redis-benchmark",
        [
            "-h", &addr, "-p", PORT, "-n", "20000", "-c", "10", "-t", "set,get", "--csv",
        ],
    );
    let ran = stage.run_ok("redis-benchmark", &mut bench, Duration::from_secs(120))?;
    // CSV: "test","rps",... one line per test after the header.
    let rps = |test: &str| -> Option<f64> {
        ran.stdout
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\"")))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
    };
    let (Some(set), Some(get)) = (rps("SET"), rps("GET")) else {
        return Err(MatrixError::check(
            "redis-benchmark CSV",
            "SET and GET rows",
            ran.stdout.clone(),
        ));
    };
    let mut dbsize = stage.command(
        Side::Client,
        &Who::Nobody,
        "redis-cli",
        ["-h", &addr, "-p", PORT, "DBSIZE"],
    );
    let ran = stage.run_ok("redis-cli DBSIZE", &mut dbsize, CLIENT_TIMEOUT)?;
    let keys: u64 = ran.stdout.trim().parse().unwrap_or(0);
    if keys < 4 {
        return Err(MatrixError::check(
            "keys after the benchmark",
            "at least 4",
            ran.stdout.trim(),
        ));
    }
    let mut finding = Finding::default();
    finding.note(format!(
        "SET/GET/INCR/RPUSH/LRANGE answers checked; redis-benchmark 20000 requests × 2, 10 \
         clients: SET {set:.0}/s, GET {get:.0}/s"
    ));
    Ok(finding)
}

/// The newest installed PostgreSQL server's `bin` directory.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

pub(super) fn postgresql(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const PORT: u16 = 5433;
    const PASSWORD: &str = "matrix-secret";
    let bin = postgres_bin().ok_or_else(|| MatrixError::Missing {
        programs: "/usr/lib/postgresql/*/bin/postgres".into(),
    })?;
    let data = stage.path("pgdata");
    let pwfile = stage.write("pwfile", format!("{PASSWORD}\n"))?;
    stage.mkdir("sock")?;
    let mut initdb = stage
        .topology()
        .server
        .host
        .command_as_user(bin.join("initdb"));
    initdb
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "matrix",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(stage.dir());
    stage.run_ok("initdb", &mut initdb, Duration::from_secs(120))?;
    let hba = data.join("pg_hba.conf");
    let mut rules =
        std::fs::read_to_string(&hba).map_err(|e| MatrixError::io("reading pg_hba.conf", e))?;
    rules.push_str("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n");
    std::fs::write(&hba, rules).map_err(|e| MatrixError::io("writing pg_hba.conf", e))?;

    let sock = stage.path("sock").display().to_string();
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        bin.join("postgres"),
        [
            "-D",
            &data.display().to_string(),
            "-p",
            &PORT.to_string(),
            "-c",
            "listen_addresses=*",
            "-c",
            &format!("unix_socket_directories={sock}"),
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=20",
        ],
    );
    stage.start_server("postgres", server)?;
    stage.wait_tcp("postgres", Side::Server, PORT, SERVER_TIMEOUT)?;
    // The port opens before startup (crash recovery, checkpoint) ends, and until then the
    // postmaster answers "the database system is starting up": pg_isready reports that at
    // once as exit status 1 ("rejecting connections") and does not wait (its -t bounds
    // only the connection attempt). Ask again until it says "accepting connections".
    let deadline = std::time::Instant::now() + SERVER_TIMEOUT;
    loop {
        let mut ready = stage
            .topology()
            .server
            .host
            .command_as_user(bin.join("pg_isready"));
        ready.args(["-h", "127.0.0.1", "-p", &PORT.to_string(), "-t", "10"]);
        let ran = stage.run("pg_isready", &mut ready, Duration::from_secs(20))?;
        if ran.status.success() {
            break;
        }
        // 1: rejecting (starting up), 2: no response; 3 (bad parameters) is final.
        let retry = matches!(ran.status.code(), Some(1 | 2));
        if !retry || std::time::Instant::now() >= deadline {
            return Err(MatrixError::ClientFailed {
                name: format!("pg_isready (for {} s)", SERVER_TIMEOUT.as_secs()),
                command: ran.command.clone(),
                status: ran.status,
                log: format!(
                    "{}; server log: {}",
                    ran.stderr_tail(),
                    stage.server_log("postgres")
                ),
            });
        }
        stage.check_alive("postgres")?;
        std::thread::sleep(Duration::from_millis(200));
    }

    let addr = stage.server_addr();
    let psql = |stage: &Stage<'_, '_>, db: &str, sql: &[&str]| {
        let mut args = vec![
            "-X".to_string(), "-q".into(), "-A".into(), "-t".into(),
            "-v".into(), "ON_ERROR_STOP=1".into(),
            format!("host={addr} port={PORT} user=matrix dbname={db} connect_timeout=10 sslmode=disable"),
        ];
        for statement in sql {
            args.extend(["-c".into(), statement.to_string()]);
        }
        let mut cmd = stage.command(Side::Client, &Who::Nobody, bin.join("psql"), &args);
        cmd.env("PGPASSWORD", PASSWORD);
        cmd
    };
    let mut create = psql(stage, "postgres", &["CREATE DATABASE matrix"]);
    stage.run_ok("psql CREATE DATABASE", &mut create, CLIENT_TIMEOUT)?;
    let mut work = psql(
        stage,
        "matrix",
        &[
            "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)",
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g",
            "SELECT count(*), sum(id), max(name), host(inet_client_addr()) FROM items",
        ],
    );
    let ran = stage.run_ok(
        "psql CREATE TABLE, INSERT, SELECT",
        &mut work,
        CLIENT_TIMEOUT,
    )?;
    let client = stage.client_addr();
    expect_eq(
        "SELECT count, sum, max, client address",
        ran.stdout.trim(),
        &format!("1000|500500|item 999|{client}"),
    )?;
    let mut wrong = psql(stage, "matrix", &["SELECT 1"]);
    wrong.env("PGPASSWORD", "wrong");
    let ran = stage.run("psql with a wrong password", &mut wrong, CLIENT_TIMEOUT)?;
    if ran.status.success() || !ran.stderr.contains("password authentication failed") {
        return Err(MatrixError::check(
            "login with a wrong password",
            "refused (password authentication failed)",
            format!("{} {}", ran.status, ran.stderr_tail()),
        ));
    }
    let mut finding = Finding::default();
    finding.note(format!(
        "initdb and postgres as uid 65534; SCRAM login (a wrong password refused); CREATE \
         DATABASE/TABLE, 1000-row INSERT, SELECT checked (server saw the client as {client})"
    ));
    Ok(finding)
}

const MEMCACHED_CLIENT: &str = r#"
import os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ':' in host else socket.AF_INET

def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)

tcp = socket.create_connection((host, port), timeout=5)
reader = tcp.makefile('rb')

def tcp_set(key, value):
    tcp.sendall(b'set %s 7 0 %d\r\n%s\r\n' % (key, len(value), value))
    line = reader.readline()
    if line != b'STORED\r\n':
        fail('tcp set %r: %r' % (key, line))

def tcp_get(key):
    tcp.sendall(b'get %s\r\n' % key)
    header = reader.readline().split()
    if len(header) != 4 or header[0] != b'VALUE':
        fail('tcp get %r: %r' % (key, header))
    value = reader.read(int(header[3]) + 2)[:-2]
    if reader.readline() != b'END\r\n':
        fail('tcp get %r: no END' % key)
    return value

udp = socket.socket(family, socket.SOCK_DGRAM)
udp.settimeout(2)
udp.connect((host, port))

def udp_request(request_id, payload):
    # The UDP frame header (protocol.txt): request id, sequence number, datagram count, 0.
    frame = struct.pack('>HHHH', request_id, 0, 1, 0) + payload
    for _ in range(3):
        udp.send(frame)
        try:
            while True:
                reply = udp.recv(65536)
                rid, seq, total, _ = struct.unpack('>HHHH', reply[:8])
                if rid == request_id:
                    if total != 1:
                        fail('udp reply in %d datagrams' % total)
                    return reply[8:]
        except socket.timeout:
            continue
    fail('udp request %d: no reply after 3 tries' % request_id)

tcp_value = os.urandom(400).hex().encode()  # one reply datagram (< 1400 bytes)
udp_value = os.urandom(300).hex().encode()
tcp_set(b'tcpkey', tcp_value)
if tcp_get(b'tcpkey') != tcp_value:
    fail('tcp get returned another value')
reply = udp_request(1, b'get tcpkey\r\n')
if reply != b'VALUE tcpkey 7 %d\r\n%s\r\nEND\r\n' % (len(tcp_value), tcp_value):
    fail('udp get: %r' % reply[:80])
reply = udp_request(2, b'set udpkey 9 0 %d\r\n%s\r\n' % (len(udp_value), udp_value))
if reply != b'STORED\r\n':
    fail('udp set: %r' % reply)
if tcp_get(b'udpkey') != udp_value:
    fail('tcp get of the udp-set key returned another value')
print('ok')
"#;

pub(super) fn memcached(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    let client = stage.write("memcached-client.py", MEMCACHED_CLIENT)?;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "memcached",
        [
            "-p", "11311", "-U", "11311", "-l", "0.0.0.0", "-m", "16", "-c", "64", "-t", "2",
        ],
    );
    stage.start_server("memcached", server)?;
    stage.wait_tcp("memcached", Side::Server, 11311, SERVER_TIMEOUT)?;
    let addr = stage.server_addr().to_string();
    let mut cmd = stage.command(
        Side::Client,
        &Who::Nobody,
        "python3",
        [client.display().to_string(), addr, "11311".into()],
    );
    let ran = stage.run_ok("memcached client", &mut cmd, CLIENT_TIMEOUT)?;
    expect_eq("memcached client result", ran.stdout.trim(), "ok")?;
    let mut finding = Finding::default();
    finding.note("set/get over TCP; get and set over UDP (frame header checked); values cross-checked between the two");
    Ok(finding)
}
