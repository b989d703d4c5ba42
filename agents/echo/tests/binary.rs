//! The echo agent binary: the port handshake on stdout, PORT, exit codes and
//! signals.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

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
