//! The echo agent binary: the port handshake on stdout, PORT, exit codes,
//! signals and TLS.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use agentmesh_testkit::tls::TestCa;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_agentmesh-echo-agent");

/// Starts the agent and reads the address it printed once bound.
fn spawn(args: &[&str], port_env: Option<&str>) -> (Child, SocketAddr) {
    let mut command = Command::new(BINARY);
    command.args(args).stdout(Stdio::piped()).env_remove("PORT");
    if let Some(port) = port_env {
        command.env("PORT", port);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, address.parse().unwrap())
}

fn wait(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exits_with_the_configured_code_after_the_delay() {
    let started = Instant::now();
    let (mut child, _) = spawn(&["--listen", "127.0.0.1:0", "--exit-after-ms", "300", "--exit-code", "3"], None);
    assert_eq!(wait(&mut child, Duration::from_secs(10)).code(), Some(3));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn sigterm_exits_zero() {
    let (mut child, address) = spawn(&["--listen", "127.0.0.1:0"], None);
    std::net::TcpStream::connect(address).unwrap();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(wait(&mut child, Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn port_env_overrides_the_listen_port() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    // Released just before the agent binds it; the window is tiny on loopback.
    drop(free);
    let (mut child, address) = spawn(&["--listen", "127.0.0.1:1", "--exit-after-ms", "200"], Some(&port.to_string()));
    assert_eq!(address.port(), port);
    assert_eq!(wait(&mut child, Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn serves_tls_with_the_given_certificate_and_advertises_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let files = ca.write(dir.path(), &["localhost"]);
    let (cert, key) = (files.cert_file.to_str().unwrap(), files.key_file.to_str().unwrap());
    let (mut child, address) = spawn(&["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key], None);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /.well-known/agent-card.json HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""url":"https://localhost/""#), "{reply}");
}

#[test]
fn a_key_that_does_not_load_stops_the_agent_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let files = TestCa::new().write(dir.path(), &["localhost"]);
    std::fs::write(&files.key_file, "not a key").unwrap();
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&files.cert_file)
        .arg("--tls-key")
        .arg(&files.key_file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never said it listens");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("the TLS key"), "{error}");
}
