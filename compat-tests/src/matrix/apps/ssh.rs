//! OpenSSH: an unprivileged sshd, ssh with a remote command, scp and sftp.
//!
//! sshd runs as uid 65534 on port 2222 with its own host key and a configuration that
//! admits only that user, with one public key. Two things of the machine's account
//! database stand in the way and are replaced, for sshd alone, in a private mount
//! namespace ([`Who::NobodyWithAccount`]): `nobody`'s shell is `/usr/sbin/nologin`, which
//! would refuse the remote command, and its password entry reads as locked (nss-systemd
//! answers `!*` when the unprivileged sshd cannot read `/etc/shadow`), which sshd refuses
//! without PAM. The replacement files give it `/bin/sh` and an unlocked `*` entry (no
//! password can match it). sftp and scp (which speaks the SFTP protocol since OpenSSH
//! 9.0) use the in-process `internal-sftp` server.

use std::process::Command;

use crate::matrix::stage::{chown_nobody, expect_eq, sha256_file, MatrixError, Side, Stage, Who};
use crate::matrix::{Finding, SERVER_TIMEOUT};

const PORT: u16 = 2222;
const SIZE: usize = 50_000_000;

fn keygen(stage: &Stage<'_, '_>, rel: &str) -> Result<String, MatrixError> {
    let path = stage.path(rel);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "ztmatrix", "-f"])
        .arg(&path);
    stage.run_ok("ssh-keygen", &mut cmd, std::time::Duration::from_secs(30))?;
    for p in [path.clone(), path.with_extension("pub")] {
        chown_nobody(&p)?;
    }
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(|e| MatrixError::io(format!("reading {rel}.pub"), e))?;
    Ok(public.trim().to_owned())
}

/// `/etc/passwd` with `nobody` given a shell and a home in the scenario directory.
fn passwd(stage: &Stage<'_, '_>) -> Result<String, MatrixError> {
    let system = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| MatrixError::io("reading /etc/passwd", e))?;
    let nobody = format!(
        "nobody:x:65534:65534:nobody:{}:/bin/sh",
        stage.path("home").display()
    );
    let mut lines: Vec<String> = system
        .lines()
        .filter(|l| !l.starts_with("nobody:"))
        .map(str::to_owned)
        .collect();
    lines.push(nobody);
    Ok(lines.join("\n") + "\n")
}

pub(super) fn ssh(stage: &mut Stage<'_, '_>) -> Result<Finding, MatrixError> {
    let dir = stage.dir().to_owned();
    stage.mkdir("home")?;
    stage.mkdir("cli")?;
    stage.mkdir("srv")?;
    let host_key = keygen(stage, "host_ed25519")?;
    let user_key = keygen(stage, "user_ed25519")?;
    stage.write("authorized_keys", format!("{user_key}\n"))?;
    let passwd = stage.write("passwd", passwd(stage)?)?;
    let shadow = stage.write("shadow", "nobody:*:19000:0:99999:7:::\n")?;
    std::fs::set_permissions(&shadow, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| MatrixError::io("chmod shadow", e))?;
    let config = stage.write(
        "sshd_config",
        format!(
            "Port {PORT}\n\
             ListenAddress 0.0.0.0\n\
             HostKey {dir}/host_ed25519\n\
             PidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             AllowUsers nobody\n\
             PermitUserEnvironment no\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n",
            dir = dir.display()
        ),
    )?;
    let (data, digest) = stage.random_file("data.bin", SIZE)?;
    let who = Who::NobodyWithAccount { passwd, shadow };
    let server = stage.command(
        Side::Server,
        &who,
        "/usr/sbin/sshd",
        [
            "-D".as_ref(),
            "-e".as_ref(),
            "-f".as_ref(),
            config.as_os_str(),
        ],
    );
    stage.start_server("sshd", server)?;
    stage.wait_tcp("sshd", Side::Server, PORT, SERVER_TIMEOUT)?;
    let uid = stage.server_uid("sshd");
    if uid != Some(65534) {
        return Err(MatrixError::check(
            "sshd's uid",
            "65534",
            format!("{uid:?}"),
        ));
    }

    let addr = stage.server_addr();
    let known_hosts = stage.write("known_hosts", format!("[{addr}]:{PORT} {host_key}\n"))?;
    let key = dir.join("user_ed25519");
    let options = |port_flag: &str| -> Vec<String> {
        [
            "-F",
            "none",
            "-i",
            &key.display().to_string(),
            port_flag,
            &PORT.to_string(),
            "-o",
            &format!("UserKnownHostsFile={}", known_hosts.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]
        .map(String::from)
        .to_vec()
    };
    let target = format!("nobody@{addr}");
    let timeout = std::time::Duration::from_secs(120);

    // scp: upload.
    let uploaded = dir.join("srv/up-scp.bin");
    let mut args = options("-P");
    args.extend([
        data.display().to_string(),
        format!("{target}:{}", uploaded.display()),
    ]);
    let mut scp = stage.command(Side::Client, &Who::Nobody, "scp", &args);
    let ran = stage.run_ok("scp upload", &mut scp, timeout)?;
    let scp_secs = ran.elapsed.as_secs_f64();
    expect_eq(
        "sha256 of the file scp uploaded",
        &sha256_file(&uploaded)?,
        &digest,
    )?;

    // ssh: a remote command, checked by its output and exit status.
    let mut args = options("-p");
    args.extend([
        target.clone(),
        format!("id -u; sha256sum {}; exit 7", uploaded.display()),
    ]);
    let mut ssh = stage.command(Side::Client, &Who::Nobody, "ssh", &args);
    let ran = stage.run("ssh remote command", &mut ssh, timeout)?;
    expect_eq(
        "remote command output",
        ran.stdout.trim(),
        &format!("65534\n{digest}  {}", uploaded.display()),
    )?;
    if ran.status.code() != Some(7) {
        return Err(MatrixError::check(
            "ssh exit status (the remote command's)",
            "7",
            format!("{} {}", ran.status, ran.stderr_tail()),
        ));
    }

    // sftp: download.
    let downloaded = dir.join("cli/down-sftp.bin");
    let batch = stage.write(
        "sftp-batch",
        format!("get {} {}\n", data.display(), downloaded.display()),
    )?;
    let mut args = options("-P");
    args.extend(["-b".into(), batch.display().to_string(), target]);
    let mut sftp = stage.command(Side::Client, &Who::Nobody, "sftp", &args);
    let ran = stage.run_ok("sftp download", &mut sftp, timeout)?;
    let sftp_secs = ran.elapsed.as_secs_f64();
    expect_eq(
        "sha256 of the file sftp downloaded",
        &sha256_file(&downloaded)?,
        &digest,
    )?;

    let mut finding = Finding::default();
    finding.note(format!(
        "sshd as uid 65534 (private passwd/shadow, see docs); remote command output and exit \
         status 7 checked; 50 MB scp upload {scp_secs:.1} s, sftp download {sftp_secs:.1} s, \
         sha256 match"
    ));
    Ok(finding)
}
