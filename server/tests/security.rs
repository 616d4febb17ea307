//! The management port locked down, as operators reach it: remsimctl,
//! grpcurl and plain HTTP with and without tokens (admin and read roles,
//! health open, tokens re-read on SIGHUP and never logged), TLS and
//! mutual TLS with certificates made in the test (a rotation picked up on
//! SIGHUP), and the RSPRO allow-list.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::http::{Answer, request};
use common::*;
use remsim_testing::pki::{Pki, arg};
use remsim_testing::workspace_binary;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

const ADMIN: &str = "adm-7f3c9e21";
const READER: &str = "rd-51ab0c44";

fn remsimctl(server: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(workspace_binary("remsimctl"))
        .args(["--server", server])
        .args(args)
        .env_remove("REMSIM_TOKEN")
        .env_remove("REMSIM_TOKEN_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("remsimctl runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn grpcurl_run(args: &[&str]) -> Output {
    Command::new(grpcurl())
        .args(args)
        .output()
        .expect("grpcurl runs")
}

/// `GET path` with `token` as a bearer token, if any.
async fn get(api: std::net::SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    request(api, "GET", path, &headers, b"").await
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    arg(path)
}

#[tokio::test]
async fn without_a_valid_token_only_health_answers() {
    let dir = TempDir::new("tokens");
    let tokens = write(
        &dir.path("tokens"),
        &format!("# operators\nadmin:{ADMIN}\nread:{READER}\n"),
    );
    let admin_file = write(&dir.path("admin.token"), &format!("{ADMIN}\n"));
    let read_file = write(&dir.path("read.token"), READER);
    let db = dir.path("t.db");
    // Server::start waits for SERVING through health: open without a token.
    let mut server = Server::start_with(&db, &["--api-tokens", &tokens]).await;
    let url = format!("http://{}", server.api);

    // remsimctl: no token, a read token on a write, an admin token.
    let out = remsimctl(&url, &["bank", "list"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("token is needed"), "{}", stderr(&out));
    let out = remsimctl(&url, &["--token-file", &read_file, "bank", "list"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let create = ["slotmap", "create", "1:0", "23:0"];
    let out = remsimctl(
        &url,
        &[&["--token-file", &read_file][..], &create].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("may only read"), "{}", stderr(&out));
    let out = remsimctl(
        &url,
        &[&["--token-file", &admin_file][..], &create].concat(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remsimctl(&url, &["slotmap", "list"], &[("REMSIM_TOKEN", ADMIN)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remsimctl(
        &url,
        &["slotmap", "list"],
        &[("REMSIM_TOKEN", "adm-7f3c9e2")],
    );
    assert_eq!(out.status.code(), Some(1), "a token's prefix is no token");

    // grpcurl: reflection and calls need a token too; health does not.
    let api = server.api.to_string();
    let out = grpcurl_run(&["-plaintext", &api, "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));
    let read_header = format!("authorization: Bearer {READER}");
    let admin_header = format!("authorization: Bearer {ADMIN}");
    let out = grpcurl_run(&["-plaintext", "-H", &read_header, &api, "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let map = r#"{"bank":{"bankId":2,"slotNr":0},"client":{"clientId":24,"slotNr":0}}"#;
    let create = "remsim.v1.RemsimService/CreateSlotmap";
    let out = grpcurl_run(&["-plaintext", "-H", &read_header, "-d", map, &api, create]);
    assert!(
        stderr(&out).contains("PermissionDenied"),
        "{}",
        stderr(&out)
    );
    let out = grpcurl_run(&["-plaintext", "-H", &admin_header, "-d", map, &api, create]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without a token")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // HTTP: the C REST API and /metrics behind the same layer.
    let bearer = |t: &str| format!("Bearer {t}");
    let (read, admin) = (bearer(READER), bearer(ADMIN));
    let banks = "/api/backend/v1/banks";
    let answer = get(server.api, banks, None).await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    let answer = get(server.api, banks, Some(READER)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = [
        ("Authorization", read.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = br#"{"bank":{"bankId":3,"slotNr":0},"client":{"clientId":25,"slotNr":0}}"#;
    let answer = request(server.api, "POST", "/api/backend/v1/slotmaps", &json, body).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    let json = [
        ("Authorization", admin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let answer = request(server.api, "POST", "/api/backend/v1/slotmaps", &json, body).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let answer = get(server.api, "/metrics", None).await;
    assert_eq!(answer.status, 401);
    let answer = get(server.api, "/metrics", Some(READER)).await;
    assert_eq!(answer.status, 200);

    // SIGHUP: a new tokens file replaces the old one.
    write(&dir.path("tokens"), "admin:adm-rotated-1\n");
    server.hangup();
    // Logged once the new tokens are in force (or by the file check, if it
    // came first: the same line).
    server.wait_log("API tokens reloaded").await;
    let answer = get(server.api, banks, Some(READER)).await;
    assert_eq!(answer.status, 401, "the removed token is refused");
    let answer = get(server.api, banks, Some("adm-rotated-1")).await;
    assert_eq!(answer.status, 200);
    // A broken file keeps the tokens in force.
    write(&dir.path("tokens"), "root:nope\n");
    server.hangup();
    server.wait_log("API tokens not reloaded").await;
    let answer = get(server.api, banks, Some("adm-rotated-1")).await;
    assert_eq!(answer.status, 200, "the previous tokens stay");

    let log = Server::log(&db);
    for secret in [ADMIN, READER, "adm-rotated-1", "nope"] {
        assert!(!log.contains(secret), "a token in the log");
    }
}

fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> ClientTlsConfig {
    let read = |p: &Path| std::fs::read(p).expect("PEM");
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    match client {
        Some((cert, key)) => config.identity(Identity::from_pem(read(cert), read(key))),
        None => config,
    }
}

#[tokio::test]
async fn tls_and_client_certificates_on_the_management_port() {
    let dir = TempDir::new("tls");
    let first = Pki::new(&dir.0, "first");
    // The server's files: the first PKI's, later overwritten by a rotation.
    let cert = dir.path("served.pem");
    let key = dir.path("served-key.pem");
    std::fs::copy(&first.server_cert, &cert).expect("copy");
    std::fs::copy(&first.server_key, &key).expect("copy");
    let (cert_arg, key_arg, ca_arg) = (arg(&cert), arg(&key), arg(&first.ca));
    let db = dir.path("t.db");
    let tls = tls_config(&first.ca, Some((&first.client_cert, &first.client_key)));
    let extra = [
        "--api-tls-cert",
        &cert_arg,
        "--api-tls-key",
        &key_arg,
        "--api-client-ca",
        &ca_arg,
    ];
    let mut server = Server::start_tls(&db, &extra, Some(tls)).await;
    let https = format!("https://{}", server.api);
    let (client_cert, client_key) = (arg(&first.client_cert), arg(&first.client_key));
    // remsimctl's TLS options: the CA to trust, our certificate.
    let trusting =
        |ca: &str| ["--ca", ca, "--cert", &client_cert, "--key", &client_key].map(String::from);
    let with_cert = trusting(&ca_arg);
    let with_cert: Vec<&str> = with_cert.iter().map(String::as_str).collect();

    let out = remsimctl(&https, &[&with_cert[..], &["bank", "list"]].concat(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without a client certificate, or in plain HTTP: nothing.
    let out = remsimctl(&https, &["--ca", &ca_arg, "bank", "list"], &[]);
    assert!(!out.status.success(), "served without a client certificate");
    let out = remsimctl(&format!("http://{}", server.api), &["bank", "list"], &[]);
    assert!(!out.status.success(), "served in plain HTTP");
    // grpcurl with the same files.
    let api = server.api.to_string();
    let grpcurl_tls = [
        "-cacert",
        &ca_arg,
        "-cert",
        &client_cert,
        "-key",
        &client_key,
    ];
    let out = grpcurl_run(&[&grpcurl_tls[..], &[&api, "list"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("remsim.v1.RemsimService"));

    // A rotation (cert-manager writes new files): SIGHUP, and the new
    // certificate is served; the client CA is still the first PKI's.
    let second = Pki::new(&dir.0, "second");
    std::fs::copy(&second.server_key, &key).expect("copy");
    std::fs::copy(&second.server_cert, &cert).expect("copy");
    server.hangup();
    let trusting_second = trusting(&arg(&second.ca));
    let trusting_second: Vec<&str> = trusting_second.iter().map(String::as_str).collect();
    // Logged once the new pair is in force (SIGHUP, or the file check).
    server.wait_log("TLS certificate reloaded").await;
    let out = remsimctl(
        &https,
        &[&trusting_second[..], &["bank", "list"]].concat(),
        &[],
    );
    assert!(
        out.status.success(),
        "the new certificate: {}",
        stderr(&out)
    );
    let out = remsimctl(&https, &[&with_cert[..], &["bank", "list"]].concat(), &[]);
    assert!(!out.status.success(), "the old certificate is still served");
}

#[tokio::test]
async fn rspro_from_outside_the_allow_list_is_closed_at_accept() {
    let dir = TempDir::new("allow");
    let db = dir.path("t.db");
    let mut server =
        Server::start_with(&db, &["--rspro-allow", "192.0.2.0/24, 198.51.100.7"]).await;
    let mut peer = Peer::connect(server.rspro).await;
    peer.expect_closed().await;
    let mut again = Peer::connect(server.rspro).await;
    again.expect_closed().await;
    // A third refusal from another address (127.0.0.2): its log line is the
    // next one after 127.0.0.1's, so 127.0.0.1 was logged once.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let other = socket.connect(server.rspro).await.expect("connect");
    let mut other = Peer::from_stream(other);
    other.expect_closed().await;
    let first = server.wait_log("outside the allow-list").await;
    assert!(first.contains("127.0.0.1"), "{first}");
    let next = server.wait_log("outside the allow-list").await;
    assert!(
        next.contains("127.0.0.2"),
        "logged once per address: {next}"
    );
    let metrics = get(server.api, "/metrics", None).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(r#"remsim_server_connections_refused_total{port="rspro",reason="allow"} 3"#),
        "{text}"
    );

    // Loopback allowed: a bankd is served.
    let dir = TempDir::new("allow-lo");
    let server = Server::start_with(&dir.path("t.db"), &["--rspro-allow", "127.0.0.0/8"]).await;
    let _bankd = bankd(&server, 1, 8).await;
}

/// The log lines of a server started with `args` up to its "listening" line.
fn start_log(dir: &TempDir, args: &[&str]) -> Vec<String> {
    use std::io::BufRead;
    let db = arg(&dir.path("t.db"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_remsim-server"))
        .args([
            "--rspro-listen",
            "127.0.0.1:0",
            "--db",
            &db,
            "--log-format",
            "json",
        ])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("server starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines
        .last()
        .is_some_and(|l: &String| l.contains("\"listening\""))
    {
        let line = rx
            .recv_timeout(GUARD)
            .expect("a log line before the listening one");
        lines.push(line);
    }
    remsim_testing::Proc(child).terminate();
    lines
}

#[test]
fn an_open_management_port_without_authentication_is_warned_about_once() {
    let dir = TempDir::new("warn");
    let warned = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("without authentication"))
            .count()
    };
    assert_eq!(warned(&start_log(&dir, &["--api-listen", "0.0.0.0:0"])), 1);
    assert_eq!(
        warned(&start_log(&dir, &["--api-listen", "127.0.0.1:0"])),
        0
    );
    let tokens = write(&dir.path("tokens"), "admin:x1\n");
    let with_tokens = start_log(
        &dir,
        &["--api-listen", "0.0.0.0:0", "--api-tokens", &tokens],
    );
    assert_eq!(warned(&with_tokens), 0);
    assert!(with_tokens.iter().any(|l| l.contains("API tokens loaded")));
    assert!(
        !with_tokens
            .iter()
            .any(|l| l.contains("x1\"") || l.contains(":x1"))
    );
}
