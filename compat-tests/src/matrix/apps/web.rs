//! Web servers with curl: Apache httpd (prefork and event MPMs) and nginx.

use std::path::Path;

use super::server_at;
use crate::matrix::stage::{
    expect_contains, expect_eq, sha256_file, MatrixError, Side, Stage, Who,
};
use crate::matrix::{Finding, CLIENT_TIMEOUT, SERVER_TIMEOUT};

const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// Fetch `url` `count` times in one curl process (one keep-alive connection when the
/// server allows it), each copy to `dl/N.bin`; check status, size and sha256 of every
/// copy. Returns the number of TCP connections curl opened.
fn curl_fetches(
    stage: &Stage<'_, '_>,
    url: &str,
    count: usize,
    size: usize,
    digest: &str,
) -> Result<(u32, f64), MatrixError> {
    let dl = stage.mkdir("dl")?;
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "60".into(),
        "-w".into(),
        "%{http_code} %{size_download} %{num_connects}\\n".into(),
    ];
    for i in 0..count {
        args.extend([
            "-o".into(),
            dl.join(format!("{i}.bin")).display().to_string(),
            format!("{url}?copy={i}"),
        ]);
    }
    let mut curl = stage.command(Side::Client, &Who::Nobody, "curl", &args);
    let ran = stage.run_ok("curl", &mut curl, CLIENT_TIMEOUT)?;
    let lines: Vec<&str> = ran.stdout.lines().collect();
    if lines.len() != count {
        return Err(MatrixError::check(
            "curl transfers",
            format!("{count}"),
            ran.stdout.clone(),
        ));
    }
    let mut connects = 0;
    for (i, line) in lines.iter().enumerate() {
        let fields: Vec<&str> = line.split(' ').collect();
        let want = format!("200 {size}");
        expect_eq(
            &format!("status and size of fetch {i}"),
            &fields[..2.min(fields.len())].join(" "),
            &want,
        )?;
        connects += fields
            .get(2)
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        expect_eq(
            &format!("sha256 of fetch {i}"),
            &sha256_file(&dl.join(format!("{i}.bin")))?,
            digest,
        )?;
    }
    Ok((connects, ran.elapsed.as_secs_f64()))
}

/// Fail unless every process listed runs as uid 65534.
fn expect_all_nobody(what: &str, processes: &[(u32, u32, String)]) -> Result<(), MatrixError> {
    match processes.iter().find(|(_, uid, _)| *uid != 65534) {
        None => Ok(()),
        Some((pid, uid, cmd)) => Err(MatrixError::check(
            format!("uid of {what}"),
            "65534",
            format!("{uid} for pid {pid} ({cmd})"),
        )),
    }
}

fn apache(stage: &mut Stage<'_, '_>, mpm: &str) -> Result<Finding, MatrixError> {
    const PORT: u16 = 8080;
    const SIZE: usize = 1 << 20;
    let dir = stage.dir().display().to_string();
    let (_, digest) = stage.random_file("htdocs/blob.bin", SIZE)?;
    let mpm_tuning = match mpm {
        "prefork" => "StartServers 3\nMinSpareServers 2\nMaxSpareServers 4\n",
        _ => "StartServers 2\nThreadsPerChild 8\nMaxRequestWorkers 16\n",
    };
    let config = stage.write(
        "httpd.conf",
        format!(
            "ServerRoot {dir}\n\
             ServerName matrix.test\n\
             Listen 0.0.0.0:{PORT}\n\
             PidFile {dir}/httpd.pid\n\
             DefaultRuntimeDir {dir}\n\
             Mutex file:{dir} default\n\
             ErrorLog {dir}/logs/apache-error.log\n\
             LogLevel info\n\
             LoadModule mpm_{mpm}_module {APACHE_MODULES}/mod_mpm_{mpm}.so\n\
             LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so\n\
             {mpm_tuning}\
             KeepAlive On\n\
             MaxKeepAliveRequests 100\n\
             DocumentRoot {dir}/htdocs\n\
             <Directory {dir}/htdocs>\n  Require all granted\n</Directory>\n"
        ),
    )?;
    let server = stage.command(
        Side::Server,
        &Who::Nobody,
        "/usr/sbin/apache2",
        ["-f".as_ref(), config.as_os_str(), "-DFOREGROUND".as_ref()],
    );
    stage.start_server("apache2", server)?;
    stage.wait_tcp("apache2", Side::Server, PORT, SERVER_TIMEOUT)?;
    let url = format!("http://{}/blob.bin", server_at(stage, PORT));
    let (connects, secs) = curl_fetches(stage, &url, 20, SIZE, &digest)?;
    stage.check_alive("apache2")?;
    let log = std::fs::read_to_string(stage.path("logs/apache-error.log")).unwrap_or_default();
    expect_contains(
        "apache error log (which MPM ran)",
        &log,
        &format!("[mpm_{mpm}:notice]"),
    )?;
    let config_text = config.display().to_string();
    let processes: Vec<_> = stage
        .processes_on(Side::Server)?
        .into_iter()
        .filter(|(_, _, cmd)| cmd.contains("apache2") && cmd.contains(&config_text))
        .collect();
    expect_all_nobody("apache2 processes", &processes)?;
    let processes = processes.len();
    let mut finding = Finding::default();
    if connects != 1 {
        finding.marginal(format!(
            "{connects} TCP connections for 20 keep-alive requests"
        ));
    }
    finding.note(format!(
        "mpm_{mpm}, {processes} apache2 processes as uid 65534; 20 × 1 MiB over {connects} \
         keep-alive connection(s) in {secs:.2} s, sha256 match"
    ));
    Ok(finding)
}

pub(super) fn apache_prefork(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    apache(stage, "prefork")
}

pub(super) fn apache_event(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    apache(stage, "event")
}

/// An nginx configuration: `workers` worker processes, files under `prefix`, `server`
/// the server block(s).
fn nginx_config(prefix: &Path, workers: u32, server: &str) -> String {
    let p = prefix.display();
    format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes {workers};\n\
         pid {p}/nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections 128; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {p}/body;\n\
           proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n\
           uwsgi_temp_path {p}/uwsgi;\n\
           scgi_temp_path {p}/scgi;\n\
           types {{ application/octet-stream bin; text/plain txt; }}\n\
           {server}\n\
         }}\n"
    )
}

pub(super) fn nginx(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    const PORT: u16 = 8081;
    const BACKEND_PORT: u16 = 8082;
    const SIZE: usize = 1 << 20;
    let front = stage.mkdir("front")?;
    let back = stage.mkdir("back")?;
    let (_, digest) = stage.random_file("front/www/blob.bin", SIZE)?;
    let (_, back_digest) = stage.random_file("back/www/big.bin", 3 << 20)?;
    let nonce = format!("backend {}\n", &digest[..16]);
    stage.write("back/www/hello.txt", &nonce)?;
    let backend_addr = std::net::SocketAddr::new(stage.backend_addr(), BACKEND_PORT);
    let front_conf = stage.write(
        "front/nginx.conf",
        nginx_config(
            &front,
            2,
            &format!(
                "server {{\n\
                   listen {PORT};\n\
                   root {}/www;\n\
                   location /proxy/ {{\n\
                     proxy_pass http://{backend_addr}/;\n\
                     proxy_http_version 1.1;\n\
                     proxy_set_header Connection \"\";\n\
                   }}\n\
                 }}",
                front.display()
            ),
        ),
    )?;
    let back_conf = stage.write(
        "back/nginx.conf",
        nginx_config(
            &back,
            1,
            &format!(
                "server {{ listen {BACKEND_PORT}; root {}/www; }}",
                back.display()
            ),
        ),
    )?;
    let nginx_cmd = |stage: &Stage<'_, '_>, side, prefix: &Path, conf: &Path| {
        stage.command(
            side,
            &Who::Nobody,
            "/usr/sbin/nginx",
            [
                "-p".as_ref(),
                prefix.as_os_str(),
                "-e".as_ref(),
                "stderr".as_ref(),
                "-c".as_ref(),
                conf.as_os_str(),
            ],
        )
    };
    let backend = nginx_cmd(stage, Side::Backend, &back, &back_conf);
    stage.start_server("nginx-backend", backend)?;
    let frontend = nginx_cmd(stage, Side::Server, &front, &front_conf);
    stage.start_server("nginx", frontend)?;
    stage.wait_tcp("nginx-backend", Side::Backend, BACKEND_PORT, SERVER_TIMEOUT)?;
    stage.wait_tcp("nginx", Side::Server, PORT, SERVER_TIMEOUT)?;

    let nginx: Vec<_> = stage
        .processes_on(Side::Server)?
        .into_iter()
        .filter(|(_, _, cmd)| cmd.starts_with("nginx: "))
        .collect();
    expect_all_nobody("nginx processes", &nginx)?;
    let workers = nginx
        .iter()
        .filter(|(_, _, cmd)| cmd.starts_with("nginx: worker process"))
        .count();
    if workers != 2 {
        return Err(MatrixError::check(
            "nginx worker processes",
            "2",
            workers.to_string(),
        ));
    }

    let base = format!("http://{}", server_at(stage, PORT));
    let (connects, secs) = curl_fetches(stage, &format!("{base}/blob.bin"), 10, SIZE, &digest)?;

    let mut curl = stage.command(
        Side::Client,
        &Who::Nobody,
        "curl",
        [
            "-sS",
            "--max-time",
            "30",
            "--fail",
            &format!("{base}/proxy/hello.txt"),
        ],
    );
    let ran = stage.run_ok("curl through the proxy", &mut curl, CLIENT_TIMEOUT)?;
    expect_eq("body through the reverse proxy", &ran.stdout, &nonce)?;
    let big = stage.path("dl/proxied.bin");
    let mut curl = stage.command(
        Side::Client,
        &Who::Nobody,
        "curl",
        [
            "-sS".as_ref(),
            "--max-time".as_ref(),
            "30".as_ref(),
            "--fail".as_ref(),
            "-o".as_ref(),
            big.as_os_str(),
            format!("{base}/proxy/big.bin").as_ref(),
        ],
    );
    stage.run_ok(
        "curl of a large file through the proxy",
        &mut curl,
        CLIENT_TIMEOUT,
    )?;
    expect_eq(
        "sha256 of 3 MiB through the proxy",
        &sha256_file(&big)?,
        &back_digest,
    )?;
    stage.check_alive("nginx")?;
    stage.check_alive("nginx-backend")?;

    let mut finding = Finding::default();
    if connects != 1 {
        finding.marginal(format!(
            "{connects} TCP connections for 10 keep-alive requests"
        ));
    }
    finding.note(format!(
        "master + 2 workers as uid 65534; 10 × 1 MiB static over {connects} connection(s) in \
         {secs:.2} s, sha256 match; reverse proxy to a second nginx on the client member: \
         text and 3 MiB (sha256) correct"
    ));
    Ok(finding)
}
