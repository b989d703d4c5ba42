use std::future;
use std::net::Ipv4Addr;

use async_trait::async_trait;

use super::*;
use crate::{AddressClass, Ipv4Embedding, StaticResolver, classify};
use AddressClass as C;
use NetworkMode::{Cluster, Dev, Strict};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// The names every table test can resolve.
fn resolver() -> StaticResolver {
    let mut r = StaticResolver::new();
    for (name, addrs) in [
        ("agent.example.com", &["93.184.215.14"][..]),
        ("dual.example.com", &["93.184.215.14", "2606:4700::1"]),
        ("dup.example.com", &["8.8.8.8", "8.8.8.8", "2606:4700::1", "8.8.8.8"]),
        ("metadata.internal", &["169.254.169.254"]),
        ("metadata-v6.internal", &["fd00:ec2::254"]),
        ("mixed.example.com", &["8.8.8.8", "10.0.0.5"]),
        ("mixed-mapped.example.com", &["8.8.8.8", "::ffff:169.254.169.254"]),
        ("mixed-loopback.example.com", &["10.0.0.5", "127.0.0.1"]),
        ("cgnat.example.com", &["100.100.100.200"]),
        ("zero.example.com", &["0.0.0.0"]),
        ("localhost", &["127.0.0.1", "::1"]),
        ("mapped-loopback.example.com", &["::ffff:127.0.0.1"]),
        ("svc.cluster.local", &["10.96.0.10"]),
        ("ula.cluster.local", &["fd00::5"]),
        ("nat64-private.example.com", &["64:ff9b::c0a8:101"]),
        ("empty.example.com", &[]),
    ] {
        r.insert(name, ips(addrs));
    }
    r
}

fn guard(mode: NetworkMode) -> UrlGuard {
    UrlGuard::with_resolver(mode, Arc::new(resolver()))
}

/// What a check must produce. Rejections name the exact variant and, for
/// address refusals, the class (and for names, the offending address).
#[derive(Debug, Clone, Copy)]
enum Want {
    Ok(&'static [&'static str]),
    Empty,
    TooLong,
    Malformed,
    Scheme(&'static str),
    Credentials,
    Literal(AddressClass),
    Resolved(AddressClass, &'static str),
    Unresolvable,
    NoAddresses,
}

fn assert_outcome(what: &str, got: &Result<CheckedUrl, UrlRejected>, want: Want) {
    let ok = match (got, want) {
        (Ok(checked), Want::Ok(addrs)) => checked.addrs() == ips(addrs).as_slice(),
        (Err(UrlRejected::Empty), Want::Empty) => true,
        (Err(UrlRejected::TooLong { len, max }), Want::TooLong) => *max == MAX_URL_LEN && *len > *max,
        (Err(UrlRejected::Malformed { .. }), Want::Malformed) => true,
        (Err(UrlRejected::Scheme { scheme }), Want::Scheme(s)) => scheme == s,
        (Err(UrlRejected::Credentials), Want::Credentials) => true,
        (Err(UrlRejected::ForbiddenAddress { class, addr, .. }), Want::Literal(c)) => {
            *class == c && classify(*addr) == c
        }
        (Err(UrlRejected::ForbiddenResolvedAddress { class, addr, .. }), Want::Resolved(c, a)) => {
            *class == c && *addr == ip(a)
        }
        (Err(UrlRejected::Unresolvable { .. }), Want::Unresolvable) => true,
        (Err(UrlRejected::NoAddresses { .. }), Want::NoAddresses) => true,
        _ => false,
    };
    assert!(ok, "{what}: want {want:?}, got {got:?}");
}

/// Addresses refused in every mode, one or more per class, as IPv4. Each is
/// also tried in every IPv6 form that embeds it.
const NEVER_V4: &[(&str, AddressClass)] = &[
    ("0.0.0.0", C::Unspecified),
    ("0.1.2.3", C::Unspecified),
    ("169.254.169.254", C::LinkLocal),
    ("169.254.0.1", C::LinkLocal),
    ("168.63.129.16", C::Metadata),
    ("100.64.0.1", C::Cgnat),
    ("100.100.100.200", C::Cgnat),
    ("224.0.0.1", C::Multicast),
    ("239.255.255.250", C::Multicast),
    ("255.255.255.255", C::Broadcast),
    ("240.0.0.1", C::Reserved),
    ("192.0.2.1", C::Documentation),
    ("198.51.100.1", C::Documentation),
    ("203.0.113.1", C::Documentation),
    ("198.18.0.1", C::Benchmarking),
    ("198.19.255.255", C::Benchmarking),
    ("192.0.0.8", C::ProtocolAssignments),
    ("192.88.99.1", C::SixToFourRelay),
];

/// Bracketed IPv6 spellings of `v4`: mapped (dotted and hex), compatible,
/// NAT64 and 6to4.
fn v6_forms(v4: Ipv4Addr) -> Vec<(String, Ipv4Embedding)> {
    let [a, b, c, d] = v4.octets();
    let hi = u16::from_be_bytes([a, b]);
    let lo = u16::from_be_bytes([c, d]);
    let mut forms = vec![
        (format!("[::ffff:{v4}]"), Ipv4Embedding::Mapped),
        (format!("[::ffff:{hi:x}:{lo:x}]"), Ipv4Embedding::Mapped),
        (format!("[0:0:0:0:0:ffff:{v4}]"), Ipv4Embedding::Mapped),
        (format!("[64:ff9b::{v4}]"), Ipv4Embedding::Nat64),
        (format!("[2002:{hi:x}:{lo:x}::1]"), Ipv4Embedding::SixToFour),
    ];
    // ::0.0.0.0 and ::0.0.0.1 are IPv6's own :: and ::1.
    if hi != 0 || lo > 1 {
        forms.push((format!("[::{v4}]"), Ipv4Embedding::Compatible));
        forms.push((format!("[::{hi:x}:{lo:x}]"), Ipv4Embedding::Compatible));
    }
    forms
}

#[tokio::test]
async fn never_allowed_ipv4_and_embedded_forms() {
    for mode in NetworkMode::ALL {
        let g = guard(mode);
        for &(v4, class) in NEVER_V4 {
            let url = format!("http://{v4}/");
            assert_outcome(&format!("{url} ({mode})"), &g.check(&url).await, Want::Literal(class));
            for (host, form) in v6_forms(v4.parse().unwrap()) {
                let url = format!("https://{host}:8443/a2a");
                let got = g.check(&url).await;
                assert_outcome(&format!("{url} ({mode})"), &got, Want::Literal(class));
                match got {
                    Err(UrlRejected::ForbiddenAddress { embedded: Some(e), .. }) => {
                        assert_eq!(e.form, form, "{url}");
                        assert_eq!(e.addr.to_string(), v4, "{url}");
                    }
                    other => panic!("{url}: embedded address not reported: {other:?}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn never_allowed_ipv6() {
    let table: &[(&str, AddressClass)] = &[
        ("[::]", C::Unspecified),
        ("[fe80::1]", C::LinkLocal),
        ("[febf::1]", C::LinkLocal),
        ("[fd00:ec2::254]", C::Metadata),
        ("[ff02::1]", C::Multicast),
        ("[ff05::1:3]", C::Multicast),
        ("[2001:db8::1]", C::Documentation),
        ("[3fff::1]", C::Documentation),
        ("[100::1]", C::DiscardOnly),
        ("[2001::1]", C::ProtocolAssignments),
        ("[fec0::1]", C::Reserved),
        ("[::8.8.8.8]", C::Reserved),
        ("[64:ff9b:1::a9fe:a9fe]", C::Reserved),
    ];
    for mode in NetworkMode::ALL {
        let g = guard(mode);
        for &(host, class) in table {
            let url = format!("http://{host}/");
            assert_outcome(&format!("{url} ({mode})"), &g.check(&url).await, Want::Literal(class));
        }
    }
}

/// Each row: URL, then the outcome in strict, cluster and dev mode.
const MODE_MATRIX: &[(&str, [Want; 3])] = &[
    // Loopback literals.
    ("http://127.0.0.1:8080/", [Want::Literal(C::Loopback), Want::Literal(C::Loopback), Want::Ok(&["127.0.0.1"])]),
    ("http://127.1.2.3/", [Want::Literal(C::Loopback), Want::Literal(C::Loopback), Want::Ok(&["127.1.2.3"])]),
    ("http://[::1]:9000/", [Want::Literal(C::Loopback), Want::Literal(C::Loopback), Want::Ok(&["::1"])]),
    (
        "http://[::ffff:127.0.0.1]/",
        [Want::Literal(C::Loopback), Want::Literal(C::Loopback), Want::Ok(&["::ffff:127.0.0.1"])],
    ),
    (
        "http://[::ffff:7f00:1]/",
        [Want::Literal(C::Loopback), Want::Literal(C::Loopback), Want::Ok(&["::ffff:127.0.0.1"])],
    ),
    // Private literals.
    ("http://10.0.0.1/", [Want::Literal(C::Private), Want::Ok(&["10.0.0.1"]), Want::Ok(&["10.0.0.1"])]),
    ("http://172.16.0.1/", [Want::Literal(C::Private), Want::Ok(&["172.16.0.1"]), Want::Ok(&["172.16.0.1"])]),
    (
        "http://172.31.255.254/",
        [Want::Literal(C::Private), Want::Ok(&["172.31.255.254"]), Want::Ok(&["172.31.255.254"])],
    ),
    ("http://192.168.1.1/", [Want::Literal(C::Private), Want::Ok(&["192.168.1.1"]), Want::Ok(&["192.168.1.1"])]),
    ("http://[fd00::1]/", [Want::Literal(C::Private), Want::Ok(&["fd00::1"]), Want::Ok(&["fd00::1"])]),
    ("http://[fc00::1]/", [Want::Literal(C::Private), Want::Ok(&["fc00::1"]), Want::Ok(&["fc00::1"])]),
    (
        "http://[::ffff:10.0.0.1]/",
        [Want::Literal(C::Private), Want::Ok(&["::ffff:10.0.0.1"]), Want::Ok(&["::ffff:10.0.0.1"])],
    ),
    (
        "http://[64:ff9b::10.0.0.1]/",
        [Want::Literal(C::Private), Want::Ok(&["64:ff9b::a00:1"]), Want::Ok(&["64:ff9b::a00:1"])],
    ),
    // Names.
    (
        "http://localhost:8080/",
        [
            Want::Resolved(C::Loopback, "127.0.0.1"),
            Want::Resolved(C::Loopback, "127.0.0.1"),
            Want::Ok(&["127.0.0.1", "::1"]),
        ],
    ),
    (
        "http://mapped-loopback.example.com/",
        [
            Want::Resolved(C::Loopback, "::ffff:127.0.0.1"),
            Want::Resolved(C::Loopback, "::ffff:127.0.0.1"),
            Want::Ok(&["::ffff:127.0.0.1"]),
        ],
    ),
    (
        "http://svc.cluster.local:50051/",
        [Want::Resolved(C::Private, "10.96.0.10"), Want::Ok(&["10.96.0.10"]), Want::Ok(&["10.96.0.10"])],
    ),
    (
        "http://ula.cluster.local/",
        [Want::Resolved(C::Private, "fd00::5"), Want::Ok(&["fd00::5"]), Want::Ok(&["fd00::5"])],
    ),
    (
        "http://nat64-private.example.com/",
        [
            Want::Resolved(C::Private, "64:ff9b::c0a8:101"),
            Want::Ok(&["64:ff9b::c0a8:101"]),
            Want::Ok(&["64:ff9b::c0a8:101"]),
        ],
    ),
    // Public + private: every address must pass.
    (
        "http://mixed.example.com/",
        [
            Want::Resolved(C::Private, "10.0.0.5"),
            Want::Ok(&["8.8.8.8", "10.0.0.5"]),
            Want::Ok(&["8.8.8.8", "10.0.0.5"]),
        ],
    ),
    (
        "http://mixed-loopback.example.com/",
        [
            Want::Resolved(C::Private, "10.0.0.5"),
            Want::Resolved(C::Loopback, "127.0.0.1"),
            Want::Ok(&["10.0.0.5", "127.0.0.1"]),
        ],
    ),
];

#[tokio::test]
async fn mode_matrix() {
    for &(url, wants) in MODE_MATRIX {
        for (mode, want) in NetworkMode::ALL.into_iter().zip(wants) {
            assert_outcome(&format!("{url} ({mode})"), &guard(mode).check(url).await, want);
        }
    }
}

/// Rows with the same outcome in every mode.
const EVERY_MODE: &[(&str, Want)] = &[
    // Public.
    ("http://8.8.8.8/", Want::Ok(&["8.8.8.8"])),
    ("https://93.184.215.14:8443/a2a?x=1#frag", Want::Ok(&["93.184.215.14"])),
    ("https://[2606:4700:4700::1111]/", Want::Ok(&["2606:4700:4700::1111"])),
    ("http://[::ffff:8.8.8.8]/", Want::Ok(&["::ffff:8.8.8.8"])),
    ("http://[64:ff9b::8.8.8.8]/", Want::Ok(&["64:ff9b::808:808"])),
    ("http://[2002:808:808::1]/", Want::Ok(&["2002:808:808::1"])),
    ("http://agent.example.com:9000/", Want::Ok(&["93.184.215.14"])),
    ("HTTPS://Agent.Example.COM/path", Want::Ok(&["93.184.215.14"])),
    ("https://agent.example.com./", Want::Ok(&["93.184.215.14"])),
    ("https://dual.example.com/", Want::Ok(&["93.184.215.14", "2606:4700::1"])),
    ("https://dup.example.com/", Want::Ok(&["8.8.8.8", "2606:4700::1"])),
    // Names resolving to never-allowed addresses.
    ("http://metadata.internal/", Want::Resolved(C::LinkLocal, "169.254.169.254")),
    ("http://metadata-v6.internal/", Want::Resolved(C::Metadata, "fd00:ec2::254")),
    ("http://mixed-mapped.example.com/", Want::Resolved(C::LinkLocal, "::ffff:169.254.169.254")),
    ("http://cgnat.example.com/", Want::Resolved(C::Cgnat, "100.100.100.200")),
    ("http://zero.example.com/", Want::Resolved(C::Unspecified, "0.0.0.0")),
    // Resolution failures.
    ("http://nxdomain.example.com/", Want::Unresolvable),
    ("http://empty.example.com/", Want::NoAddresses),
    // IPv4 in odd spellings, normalised by the URL parser.
    ("http://2852039166/", Want::Literal(C::LinkLocal)),
    ("http://0xA9FEA9FE/", Want::Literal(C::LinkLocal)),
    ("http://0xa9.0xfe.0xa9.0xfe/", Want::Literal(C::LinkLocal)),
    ("http://0251.0376.0251.0376/", Want::Literal(C::LinkLocal)),
    ("http://025177524776/", Want::Literal(C::LinkLocal)),
    ("http://169.254.43518/", Want::Literal(C::LinkLocal)),
    ("http://169.16689662/", Want::Literal(C::LinkLocal)),
    ("http://169.254.169.254./", Want::Literal(C::LinkLocal)),
    ("http://%31%36%39.254.169.254/", Want::Literal(C::LinkLocal)),
    ("http://\u{ff11}\u{ff16}\u{ff19}.254.169.254/", Want::Literal(C::LinkLocal)),
    ("http://0/", Want::Literal(C::Unspecified)),
    ("http://0x64400001/", Want::Literal(C::Cgnat)),
    ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", Want::Literal(C::LinkLocal)),
    ("http://[0:0:0:0:0:ffff:169.254.169.254]/", Want::Literal(C::LinkLocal)),
    // Userinfo, even with an otherwise fine host; checked before the host.
    ("http://user:s3cr3t@agent.example.com/", Want::Credentials),
    ("http://user@agent.example.com/", Want::Credentials),
    ("http://:s3cr3t@agent.example.com/", Want::Credentials),
    ("http://agent.example.com@169.254.169.254/", Want::Credentials),
    // Schemes.
    ("ftp://agent.example.com/", Want::Scheme("ftp")),
    ("file:///etc/passwd", Want::Scheme("file")),
    ("gopher://agent.example.com:70/_x", Want::Scheme("gopher")),
    ("ws://agent.example.com/", Want::Scheme("ws")),
    ("wss://agent.example.com/", Want::Scheme("wss")),
    ("grpc://agent.example.com/", Want::Scheme("grpc")),
    ("javascript:alert(1)", Want::Scheme("javascript")),
    ("data:text/plain,hello", Want::Scheme("data")),
    ("dict://169.254.169.254:11211/", Want::Scheme("dict")),
    // Not URLs.
    ("", Want::Empty),
    ("   \t\n", Want::Empty),
    ("agent.example.com", Want::Malformed),
    ("/relative/path", Want::Malformed),
    ("http://", Want::Malformed),
    // WHATWG parsing reads the first path segment as the host: http://path/.
    ("http:///path", Want::Unresolvable),
    ("http://[::1/", Want::Malformed),
    ("http://[fe80::1%25eth0]/", Want::Malformed),
    ("http://exa mple.com/", Want::Malformed),
    ("http://256.0.0.1/", Want::Malformed),
    ("http://agent.example.com:99999/", Want::Malformed),
];

#[tokio::test]
async fn every_mode_table() {
    for mode in NetworkMode::ALL {
        let g = guard(mode);
        for &(url, want) in EVERY_MODE {
            assert_outcome(&format!("{url:?} ({mode})"), &g.check(url).await, want);
        }
    }
}

#[tokio::test]
async fn length_limit() {
    let g = guard(Strict);
    let base = "https://agent.example.com/";
    let at_limit = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
    assert_eq!(at_limit.len(), MAX_URL_LEN);
    assert_outcome("at limit", &g.check(&at_limit).await, Want::Ok(&["93.184.215.14"]));
    let over = format!("{at_limit}a");
    let got = g.check(&over).await;
    assert_outcome("over limit", &got, Want::TooLong);
    assert_eq!(
        got.unwrap_err().to_string(),
        format!("url is {} bytes long, over the limit of 2048 bytes", MAX_URL_LEN + 1)
    );
    // The limit is checked before parsing, so even garbage is reported as too long.
    let garbage = "x".repeat(100_000);
    assert_outcome("huge garbage", &g.check(&garbage).await, Want::TooLong);
}

async fn message(mode: NetworkMode, url: &str) -> String {
    guard(mode).check(url).await.unwrap_err().to_string()
}

#[tokio::test]
async fn messages_are_precise() {
    let table: &[(NetworkMode, &str, &str)] = &[
        (
            Dev,
            "http://169.254.169.254/latest/meta-data/",
            "url host 169.254.169.254 is a link-local/metadata address, which is never allowed",
        ),
        (
            Dev,
            "http://2852039166/",
            "url host 169.254.169.254 is a link-local/metadata address, which is never allowed",
        ),
        (
            Dev,
            "http://metadata.internal/",
            "url host metadata.internal resolves to 169.254.169.254, a link-local/metadata address, \
             which is never allowed",
        ),
        (Dev, "ftp://agent.example.com/", "url scheme ftp is not allowed: use http or https"),
        (
            Strict,
            "http://localhost:8080/",
            "url host localhost resolves to 127.0.0.1, a loopback address, allowed only in dev mode",
        ),
        (Cluster, "http://[::1]/", "url host [::1] is a loopback address, allowed only in dev mode"),
        (Strict, "http://10.0.0.1/", "url host 10.0.0.1 is a private address, allowed only in cluster or dev mode"),
        (
            Strict,
            "http://svc.cluster.local/",
            "url host svc.cluster.local resolves to 10.96.0.10, a private address, \
             allowed only in cluster or dev mode",
        ),
        (
            Dev,
            "http://[::ffff:169.254.169.254]/",
            "url host [::ffff:a9fe:a9fe] is a link-local/metadata address \
             (169.254.169.254 in IPv4-mapped form), which is never allowed",
        ),
        (
            Dev,
            "http://[::a9fe:a9fe]/",
            "url host [::a9fe:a9fe] is a link-local/metadata address \
             (169.254.169.254 in IPv4-compatible form), which is never allowed",
        ),
        (
            Dev,
            "http://[2002:a9fe:a9fe::1]/",
            "url host [2002:a9fe:a9fe::1] is a link-local/metadata address \
             (169.254.169.254 in 6to4 form), which is never allowed",
        ),
        (
            Dev,
            "http://mixed-mapped.example.com/",
            "url host mixed-mapped.example.com resolves to ::ffff:169.254.169.254, \
             a link-local/metadata address (169.254.169.254 in IPv4-mapped form), which is never allowed",
        ),
        (
            Dev,
            "http://100.64.0.1/",
            "url host 100.64.0.1 is a carrier-grade NAT (100.64.0.0/10) address, which is never allowed",
        ),
        (Dev, "http://192.0.2.10/", "url host 192.0.2.10 is a documentation-only address, which is never allowed"),
        (Dev, "http://empty.example.com/", "could not resolve url host empty.example.com: the name has no addresses"),
        (
            Dev,
            "http://nxdomain.example.com/",
            "could not resolve url host nxdomain.example.com: name not found in the static address table",
        ),
        (
            Dev,
            "http://user:s3cr3t@agent.example.com/",
            "url must not contain a user name or password (user:password@host)",
        ),
        (Dev, "", "url is empty"),
    ];
    for &(mode, url, want) in table {
        assert_eq!(message(mode, url).await, want, "{url} ({mode})");
    }
    assert!(message(Dev, "http://").await.starts_with("url is not valid: "), "malformed message");
}

#[tokio::test]
async fn checked_url_carries_url_port_and_addresses() {
    let g = guard(Strict);

    let c = g.check("https://dual.example.com/a2a/v1").await.unwrap();
    assert_eq!(c.as_str(), "https://dual.example.com/a2a/v1");
    assert_eq!(c.host(), "dual.example.com");
    assert_eq!(c.port(), 443);
    assert_eq!(
        c.socket_addrs(),
        vec!["93.184.215.14:443".parse::<SocketAddr>().unwrap(), "[2606:4700::1]:443".parse().unwrap()]
    );

    let c = g.check("http://agent.example.com/").await.unwrap();
    assert_eq!(c.port(), 80);
    assert_eq!(c.url().scheme(), "http");

    let c = g.check("http://[2606:4700:4700::1111]:8080/").await.unwrap();
    assert_eq!(c.host(), "[2606:4700:4700::1111]");
    assert_eq!(c.port(), 8080);
    assert_eq!(c.socket_addrs(), vec!["[2606:4700:4700::1111]:8080".parse().unwrap()]);

    // The normalised URL is what callers should store and connect to.
    let c = g.check("HTTP://0x08080808:80/x").await.unwrap();
    assert_eq!(c.into_url().as_str(), "http://8.8.8.8/x");
}

/// A resolver whose every lookup fails.
struct Failing;

#[async_trait]
impl Resolve for Failing {
    async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<IpAddr>> {
        Err(io::Error::other("SERVFAIL"))
    }
}

/// A resolver that never answers.
struct Hanging;

#[async_trait]
impl Resolve for Hanging {
    async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<IpAddr>> {
        future::pending().await
    }
}

/// A resolver that records the port it was asked with.
struct PortEcho;

#[async_trait]
impl Resolve for PortEcho {
    async fn resolve(&self, _host: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        Ok(vec![IpAddr::V4(Ipv4Addr::new(8, 8, (port >> 8) as u8, port as u8))])
    }
}

#[tokio::test]
async fn resolver_failure_is_refused() {
    let g = UrlGuard::with_resolver(Dev, Arc::new(Failing));
    let got = g.check("https://agent.example.com/").await;
    match &got {
        Err(UrlRejected::Unresolvable { host, reason }) => {
            assert_eq!(host, "agent.example.com");
            assert_eq!(reason.to_string(), "SERVFAIL");
        }
        other => panic!("want Unresolvable, got {other:?}"),
    }
    assert_eq!(got.unwrap_err().to_string(), "could not resolve url host agent.example.com: SERVFAIL");
    // IP literals never reach the resolver.
    assert!(g.check("https://8.8.8.8/").await.is_ok());
}

#[tokio::test]
async fn resolver_timeout_is_refused() {
    let g = UrlGuard::with_resolver(Dev, Arc::new(Hanging)).with_resolve_timeout(Duration::from_millis(20));
    match g.check("https://agent.example.com/").await {
        Err(UrlRejected::Unresolvable { host, reason }) => {
            assert_eq!(host, "agent.example.com");
            assert_eq!(reason.kind(), io::ErrorKind::TimedOut);
        }
        other => panic!("want Unresolvable, got {other:?}"),
    }
}

#[tokio::test]
async fn resolver_gets_effective_port() {
    let g = UrlGuard::with_resolver(Strict, Arc::new(PortEcho));
    for (url, port) in [("http://a.example/", 80u16), ("https://a.example/", 443), ("https://a.example:8443/", 8443)] {
        let c = g.check(url).await.unwrap();
        let [hi, lo] = port.to_be_bytes();
        assert_eq!(c.addrs(), &[IpAddr::V4(Ipv4Addr::new(8, 8, hi, lo))], "{url}");
    }
}

#[tokio::test]
async fn system_resolver_localhost() {
    // /etc/hosts maps localhost to loopback on every machine we run on.
    match UrlGuard::new(Strict).check("http://localhost:1/").await {
        Err(UrlRejected::ForbiddenResolvedAddress { host, class, .. }) => {
            assert_eq!(host, "localhost");
            assert_eq!(class, C::Loopback);
        }
        other => panic!("want ForbiddenResolvedAddress, got {other:?}"),
    }
    let c = UrlGuard::new(Dev).check("http://localhost:1/").await.unwrap();
    assert!(!c.addrs().is_empty());
    assert!(c.addrs().iter().all(|a| classify(*a) == C::Loopback), "{c:?}");
}

#[test]
fn guard_accessors() {
    let g = UrlGuard::new(Cluster);
    assert_eq!(g.mode(), Cluster);
    assert!(g.permits(ip("10.0.0.1")));
    assert!(g.permits(ip("8.8.8.8")));
    assert!(!g.permits(ip("127.0.0.1")));
    assert!(!g.permits(ip("::ffff:169.254.169.254")));
    assert!(format!("{g:?}").contains("Cluster"));
}

#[test]
fn rejection_helpers() {
    let e = UrlRejected::ForbiddenAddress {
        host: "169.254.169.254".into(),
        addr: ip("169.254.169.254"),
        class: C::LinkLocal,
        embedded: None,
    };
    assert_eq!(e.address(), Some((ip("169.254.169.254"), C::LinkLocal)));
    assert!(!e.is_resolution_failure());
    assert!(UrlRejected::NoAddresses { host: "x".into() }.is_resolution_failure());
    assert_eq!(UrlRejected::Credentials.address(), None);
}
