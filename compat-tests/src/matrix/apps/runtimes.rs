//! Language runtimes: Python, Node.js, Java, Go.

use std::time::Duration;

use super::server_at;
use crate::matrix::elf;
use crate::matrix::stage::{expect_eq, MatrixError, Side, Stage, Who};
use crate::matrix::{Finding, CLIENT_TIMEOUT, SERVER_TIMEOUT};

const PYTHON_CLIENT: &str = r#"
import hashlib, sys, urllib.request
url, count = sys.argv[1], int(sys.argv[2])
for _ in range(count):
    with urllib.request.urlopen(url, timeout=20) as reply:
        body = reply.read()
        print(reply.status, len(body), hashlib.sha256(body).hexdigest())
"#;

pub(super) fn python(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const SIZE: usize = 4 << 20;
    let (_, digest) = stage.random_file("www/blob.bin", SIZE)?;
    let www = stage.path("www");
    let client = stage.write("client.py", PYTHON_CLIENT)?;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "python3",
        [
            "-m".as_ref(),
            "http.server".as_ref(),
            "8000".as_ref(),
            "--bind".as_ref(),
            "0.0.0.0".as_ref(),
            "--directory".as_ref(),
            www.as_os_str(),
        ],
    );
    stage.start_server("http.server", server)?;
    stage.wait_tcp("http.server", Side::Server, 8000, SERVER_TIMEOUT)?;
    let url = format!("http://{}/blob.bin", server_at(stage, 8000));
    let mut cmd = stage.command(
        Side::Client,
        &Who::Nobody,
        "python3",
        [client.as_os_str(), url.as_ref(), "3".as_ref()],
    );
    let ran = stage.run_ok("urllib client", &mut cmd, CLIENT_TIMEOUT)?;
    let want = format!("200 {SIZE} {digest}\n").repeat(3);
    expect_eq("status, length and sha256 of 3 fetches", &ran.stdout, &want)?;
    let mut finding = Finding::default();
    finding.note(format!(
        "3 × 4 MiB fetched, sha256 matches ({:.2} s)",
        ran.elapsed.as_secs_f64()
    ));
    Ok(finding)
}

pub(super) fn ipv6(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const SIZE: usize = 1 << 20;
    let Some(addr6) = stage.server_addr6() else {
        return Err(MatrixError::check(
            "the server member's IPv6 address",
            "one",
            "none was reported for this network",
        ));
    };
    let (_, digest) = stage.random_file("www/blob.bin", SIZE)?;
    let www = stage.path("www");
    let client = stage.write("client.py", PYTHON_CLIENT)?;
    // `--bind ::` makes http.server dual-stack (IPV6_V6ONLY off), so the readiness probe
    // on 127.0.0.1 reaches it too.
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "python3",
        [
            "-m".as_ref(),
            "http.server".as_ref(),
            "8005".as_ref(),
            "--bind".as_ref(),
            "::".as_ref(),
            "--directory".as_ref(),
            www.as_os_str(),
        ],
    );
    stage.start_server("http.server", server)?;
    stage.wait_tcp("http.server", Side::Server, 8005, SERVER_TIMEOUT)?;
    let url = format!("http://{}/blob.bin", std::net::SocketAddr::new(addr6, 8005));
    let mut cmd = stage.command(
        Side::Client,
        &Who::Nobody,
        "python3",
        [client.as_os_str(), url.as_ref(), "1".as_ref()],
    );
    let ran = stage.run_ok("urllib client over IPv6", &mut cmd, CLIENT_TIMEOUT)?;
    expect_eq(
        "status, length and sha256 over IPv6",
        &ran.stdout,
        &format!("200 {SIZE} {digest}\n"),
    )?;
    let target = addr6.to_string();
    let mut ping = stage.command(
        Side::Client,
        &Who::Nobody,
        "setpriv",
        [
            "--no-new-privs",
            "ping",
            "-6",
            "-n",
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "2",
            "-w",
            "20",
            &target,
        ],
    );
    let ran = stage.run("ping -6", &mut ping, Duration::from_secs(30))?;
    let mut finding = Finding::default();
    if !ran.stdout.contains(" 5 received") {
        let summary = ran
            .stdout
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or("");
        if !ran.stdout.contains(" 0 received") && !summary.is_empty() {
            finding.marginal(format!("ping -6: {summary}"));
        } else {
            return Err(MatrixError::check(
                "ICMPv6 echo replies",
                "5 received",
                format!("{summary:?} {}", ran.stderr_tail()),
            ));
        }
    }
    finding.note(format!(
        "1 MiB over HTTP to [{addr6}] with sha256 match; 5/5 ICMPv6 echo replies"
    ));
    Ok(finding)
}

const NODE_SERVER: &str = r#"
const http = require('http');
const crypto = require('crypto');
const server = http.createServer((req, res) => {
  const hash = crypto.createHash('sha256');
  let length = 0;
  req.on('data', (chunk) => { hash.update(chunk); length += chunk.length; });
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`${req.method} ${req.url} ${length} ${hash.digest('hex')}`);
  });
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.argv[2]), '0.0.0.0');
"#;

const NODE_CLIENT: &str = r#"
const http = require('http');
const crypto = require('crypto');
const [host, port, count] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const sockets = new Set();
function post(i) {
  return new Promise((resolve, reject) => {
    const body = crypto.randomBytes(1000 + i * 997);
    const want = `POST /item/${i} ${body.length} ${crypto.createHash('sha256').update(body).digest('hex')}`;
    const req = http.request({ host, port, path: `/item/${i}`, method: 'POST', agent, timeout: 10000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => text === want ? resolve() : reject(new Error(`got ${text} want ${want}`)));
    });
    req.on('socket', (s) => sockets.add(s));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}
(async () => {
  for (let i = 0; i < count; i++) await post(i);
  console.log(`ok ${count} connections ${sockets.size}`);
  agent.destroy();
})().catch((e) => { console.error(e.message); process.exit(1); });
"#;

pub(super) fn node(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    let server_js = stage.write("server.js", NODE_SERVER)?;
    let client_js = stage.write("client.js", NODE_CLIENT)?;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "node",
        [server_js.as_os_str(), "8001".as_ref()],
    );
    stage.start_server("node-server", server)?;
    stage.wait_tcp("node-server", Side::Server, 8001, SERVER_TIMEOUT)?;
    let host = stage.server_addr().to_string();
    let mut client = stage.command(
        Side::Client,
        &Who::Nobody,
        "node",
        [
            client_js.as_os_str(),
            host.as_ref(),
            "8001".as_ref(),
            "20".as_ref(),
        ],
    );
    let ran = stage.run_ok("node client", &mut client, CLIENT_TIMEOUT)?;
    expect_eq(
        "node client result",
        ran.stdout.trim(),
        "ok 20 connections 1",
    )?;
    let mut finding = Finding::default();
    finding.note("20 POSTs (1-20 KB) over 1 keep-alive connection, sha256 echoed correctly");
    Ok(finding)
}

const JAVA_SERVER: &str = r#"
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.security.MessageDigest;
import java.util.HexFormat;

public class Server {
    public static void main(String[] args) throws Exception {
        HttpServer server = HttpServer.create(new InetSocketAddress(Integer.parseInt(args[0])), 16);
        server.createContext("/", exchange -> {
            byte[] body = exchange.getRequestBody().readAllBytes();
            String text;
            try {
                text = body.length + " " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
            } catch (Exception e) {
                text = e.toString();
            }
            byte[] reply = text.getBytes();
            exchange.sendResponseHeaders(200, reply.length);
            exchange.getResponseBody().write(reply);
            exchange.close();
        });
        server.start();
    }
}
"#;

const JAVA_CLIENT: &str = r#"
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;
import java.util.Random;

public class Client {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();
        Random random = new Random();
        int count = Integer.parseInt(args[1]);
        for (int i = 0; i < count; i++) {
            byte[] body = new byte[1000 + i * 997];
            random.nextBytes(body);
            String want = body.length + " " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
            HttpRequest request = HttpRequest.newBuilder(URI.create(args[0] + "/item/" + i))
                .timeout(Duration.ofSeconds(10))
                .POST(HttpRequest.BodyPublishers.ofByteArray(body))
                .build();
            HttpResponse<String> reply = client.send(request, HttpResponse.BodyHandlers.ofString());
            if (reply.statusCode() != 200 || !reply.body().equals(want)) {
                System.err.println("request " + i + ": status " + reply.statusCode() + " body " + reply.body() + " want " + want);
                System.exit(1);
            }
        }
        System.out.println("ok " + count);
    }
}
"#;

/// Small, quick JVMs: the machine has two cores and each `java File.java` compiles.
const JAVA_FLAGS: [&str; 3] = ["-XX:+UseSerialGC", "-Xmx128m", "-XX:TieredStopAtLevel=1"];

pub(super) fn java(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    let server_java = stage.write("Server.java", JAVA_SERVER)?;
    let client_java = stage.write("Client.java", JAVA_CLIENT)?;
    let mut args: Vec<String> = JAVA_FLAGS.iter().map(|s| s.to_string()).collect();
    args.extend([server_java.display().to_string(), "8002".into()]);
    let server = stage.command(Side::Server, &Who::Nobody, "java", &args);
    stage.start_server("java-server", server)?;
    // `java File.java` compiles in memory first: give it time on a busy machine.
    stage.wait_tcp("java-server", Side::Server, 8002, Duration::from_secs(90))?;
    let url = format!("http://{}", server_at(stage, 8002));
    let mut args: Vec<String> = JAVA_FLAGS.iter().map(|s| s.to_string()).collect();
    args.extend([client_java.display().to_string(), url, "20".into()]);
    let mut client = stage.command(Side::Client, &Who::Nobody, "java", &args);
    let ran = stage.run_ok("java client", &mut client, Duration::from_secs(120))?;
    expect_eq("java client result", ran.stdout.trim(), "ok 20")?;
    let mut finding = Finding::default();
    finding.note("20 POSTs (1-20 KB) through java.net.http.HttpClient, sha256 echoed correctly");
    Ok(finding)
}

const GO_SERVER: &str = r#"package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	udp, err := net.ListenPacket("udp", ":"+os.Args[2])
	if err != nil {
		panic(err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			reply := append([]byte("echo "), buf[:n]...)
			udp.WriteTo(reply, from)
		}
	}()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %d %x", r.URL.Path, len(body), sha256.Sum256(body))
	})
	panic(http.ListenAndServe(":"+os.Args[1], nil))
}
"#;

const GO_CLIENT: &str = r#"package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"time"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	host := os.Args[1]
	client := &http.Client{Timeout: 10 * time.Second}
	reused := 0
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if info.Reused {
			reused++
		}
	}}
	const requests = 50
	for i := 0; i < requests; i++ {
		body := make([]byte, 500+i*311)
		rand.Read(body)
		path := fmt.Sprintf("/item/%d", i)
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
			"POST", "http://"+net.JoinHostPort(host, os.Args[2])+path, bytes.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			fail("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%s %d %x", path, len(body), sha256.Sum256(body))
		if err != nil || resp.StatusCode != 200 || string(got) != want {
			fail("request %d: status %d body %q err %v, want %q", i, resp.StatusCode, got, err, want)
		}
	}
	conn, err := net.Dial("udp", net.JoinHostPort(host, os.Args[3]))
	if err != nil {
		fail("udp: %v", err)
	}
	echoed := 0
	buf := make([]byte, 65536)
	for i := 0; i < 20; i++ {
		msg := fmt.Sprintf("datagram %d", i)
		conn.Write([]byte(msg))
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Read(buf)
		if err == nil && string(buf[:n]) == "echo "+msg {
			echoed++
		}
	}
	fmt.Printf("http %d reused %d udp %d\n", requests, reused, echoed)
}
"#;

pub(super) fn go(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    let src = stage.mkdir("src")?;
    stage.write("src/server/main.go", GO_SERVER)?;
    stage.write("src/client/main.go", GO_CLIENT)?;
    let gocache = stage.mkdir("gocache")?;
    let gopath = stage.mkdir("gopath")?;
    let bin = stage.mkdir("bin")?;
    // Built by 65534 on the client member, outside any wrapping: compiling is not under
    // test, and the standard library is all it needs (no network).
    for program in ["server", "client"] {
        let out = bin.join(program);
        let mut build = stage.topology().client.host.command_as_user("go");
        build
            .args(["build", "-trimpath", "-o"])
            .arg(&out)
            .arg("main.go")
            .current_dir(src.join(program))
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", &gocache)
            .env("GOPATH", &gopath)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("HOME", stage.dir());
        stage.run_ok(
            &format!("go build {program}"),
            &mut build,
            Duration::from_secs(300),
        )?;
        match elf::file_is_static(&out) {
            Ok(Some(true)) => {}
            other => {
                return Err(MatrixError::check(
                    format!("{program} binary"),
                    "statically linked (no PT_INTERP)",
                    format!("{other:?}"),
                ))
            }
        }
    }
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        bin.join("server"),
        ["8003", "8004"],
    );
    stage.start_server("go-server", server)?;
    stage.wait_tcp("go-server", Side::Server, 8003, SERVER_TIMEOUT)?;
    let host = stage.server_addr().to_string();
    let mut client = stage.command(
        Side::Client,
        &Who::Nobody,
        bin.join("client"),
        [host.as_str(), "8003", "8004"],
    );
    let ran = stage.run_ok("go client", &mut client, CLIENT_TIMEOUT)?;
    let line = ran.stdout.trim();
    let mut finding = Finding::default();
    let fields: Vec<&str> = line.split(' ').collect();
    let (reused, echoed) = match fields.as_slice() {
        ["http", "50", "reused", r, "udp", u] => {
            (r.parse::<u32>().unwrap_or(0), u.parse::<u32>().unwrap_or(0))
        }
        _ => {
            return Err(MatrixError::check(
                "go client result",
                "http 50 reused N udp M",
                line,
            ))
        }
    };
    if reused < 49 {
        return Err(MatrixError::check(
            "HTTP keep-alive reuse",
            "49 of 50 requests on a reused connection",
            reused.to_string(),
        ));
    }
    if echoed == 0 {
        return Err(MatrixError::check("UDP echoes", "20", "0"));
    }
    if echoed < 20 {
        finding.marginal(format!("{echoed}/20 UDP echoes"));
    }
    finding.note(format!(
        "static binaries (CGO_ENABLED=0); 50 POSTs with sha256 checked, {reused} on a reused \
         keep-alive connection; {echoed}/20 UDP echoes"
    ));
    Ok(finding)
}
