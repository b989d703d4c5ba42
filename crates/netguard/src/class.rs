use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::NetworkMode;

/// What kind of destination an IP address is, as far as SSRF is concerned.
///
/// Only [`Public`](Self::Public) is allowed everywhere; [`Loopback`](Self::Loopback)
/// and [`Private`](Self::Private) depend on the [`NetworkMode`]; every other
/// class is refused in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable unicast (outside every range below; for IPv6, inside
    /// global unicast `2000::/3`).
    Public,
    /// `127.0.0.0/8` and `::1`: the machine doing the dispatch itself.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and IPv6 unique-local `fc00::/7`.
    Private,
    /// `169.254.0.0/16` and `fe80::/10`. Cloud metadata services (with their
    /// instance credentials) live at 169.254.169.254, which is why this is
    /// never allowed.
    LinkLocal,
    /// Cloud metadata endpoints that sit outside the link-local ranges:
    /// AWS's IPv6 IMDS `fd00:ec2::254` (which would otherwise pass as a ULA in
    /// cluster mode) and Azure's WireServer `168.63.129.16` (a public address
    /// that answers only from inside Azure).
    Metadata,
    /// `0.0.0.0/8` ("this network"; connecting to 0.0.0.0 reaches the local
    /// host on most systems) and `::`.
    Unspecified,
    /// Carrier-grade NAT shared space `100.64.0.0/10` (RFC 6598), used inside
    /// providers' networks (e.g. Alibaba Cloud's metadata at 100.100.100.200).
    Cgnat,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// The limited broadcast address `255.255.255.255`.
    Broadcast,
    /// `240.0.0.0/4` (reserved for future use), and IPv6 outside global
    /// unicast that has no more precise class (e.g. deprecated site-local
    /// `fec0::/10`, local-use NAT64 `64:ff9b:1::/48`, and IPv4-compatible
    /// `::a.b.c.d` forms of public addresses, which are deprecated and routed
    /// nowhere useful).
    Reserved,
    /// Documentation-only ranges: TEST-NET-1/2/3 (`192.0.2/24`,
    /// `198.51.100/24`, `203.0.113/24`), `2001:db8::/32` and `3fff::/20`.
    Documentation,
    /// Benchmarking `198.18.0.0/15` (RFC 2544). IPv6's benchmarking block
    /// `2001:2::/48` lies inside `2001::/23` and is reported as
    /// [`ProtocolAssignments`](Self::ProtocolAssignments).
    Benchmarking,
    /// IETF protocol assignments: `192.0.0.0/24` and `2001::/23` (which
    /// includes Teredo `2001::/32`, whose addresses embed an obfuscated IPv4
    /// address).
    ProtocolAssignments,
    /// The deprecated 6to4 relay anycast block `192.88.99.0/24` (RFC 7526).
    SixToFourRelay,
    /// The IPv6 discard-only prefix `100::/64` (RFC 6666).
    DiscardOnly,
}

impl AddressClass {
    /// Every class, for exhaustive tests and documentation.
    pub const ALL: [AddressClass; 15] = [
        AddressClass::Public,
        AddressClass::Loopback,
        AddressClass::Private,
        AddressClass::LinkLocal,
        AddressClass::Metadata,
        AddressClass::Unspecified,
        AddressClass::Cgnat,
        AddressClass::Multicast,
        AddressClass::Broadcast,
        AddressClass::Reserved,
        AddressClass::Documentation,
        AddressClass::Benchmarking,
        AddressClass::ProtocolAssignments,
        AddressClass::SixToFourRelay,
        AddressClass::DiscardOnly,
    ];

    /// The modes in which an address of this class may be an agent URL's
    /// target; empty for classes that are never allowed.
    pub fn allowing_modes(self) -> &'static [NetworkMode] {
        match self {
            AddressClass::Public => &NetworkMode::ALL,
            AddressClass::Loopback => &[NetworkMode::Dev],
            AddressClass::Private => &[NetworkMode::Cluster, NetworkMode::Dev],
            _ => &[],
        }
    }

    /// Whether an address of this class may be contacted in `mode`.
    pub fn allowed_in(self, mode: NetworkMode) -> bool {
        self.allowing_modes().contains(&mode)
    }

    /// True for the classes that no mode allows.
    pub fn is_never_allowed(self) -> bool {
        self.allowing_modes().is_empty()
    }

    /// Short name, e.g. `link-local/metadata` (also the [`Display`](fmt::Display) form).
    pub fn label(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local/metadata",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Cgnat => "carrier-grade NAT",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::ProtocolAssignments => "IETF protocol assignment",
            AddressClass::SixToFourRelay => "6to4 relay anycast",
            AddressClass::DiscardOnly => "discard-only",
        }
    }

    /// The class as a noun phrase for messages, e.g. `a link-local/metadata address`.
    pub fn description(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local/metadata address",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Unspecified => "an unspecified (\"this network\") address",
            AddressClass::Cgnat => "a carrier-grade NAT (100.64.0.0/10) address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "a broadcast address",
            AddressClass::Reserved => "a reserved address",
            AddressClass::Documentation => "a documentation-only address",
            AddressClass::Benchmarking => "a benchmarking (198.18.0.0/15) address",
            AddressClass::ProtocolAssignments => "an IETF protocol-assignment address",
            AddressClass::SixToFourRelay => "a 6to4 relay anycast (192.88.99.0/24) address",
            AddressClass::DiscardOnly => "a discard-only (100::/64) address",
        }
    }

    /// Why the class is refused, for messages: `which is never allowed`, or
    /// which modes would allow it (`allowed only in dev mode`). Empty for
    /// [`Public`](Self::Public).
    pub fn policy(self) -> String {
        match self.allowing_modes() {
            [] => "which is never allowed".to_owned(),
            modes if modes.len() == NetworkMode::ALL.len() => String::new(),
            modes => {
                let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
                format!("allowed only in {} mode", names.join(" or "))
            }
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How an IPv6 address carries an IPv4 address inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ipv4Embedding {
    /// `::ffff:a.b.c.d`: a dual-stack socket connects to `a.b.c.d` over IPv4.
    Mapped,
    /// `::a.b.c.d` (deprecated by RFC 4291).
    Compatible,
    /// The NAT64 well-known prefix `64:ff9b::/96` (RFC 6052): a NAT64 gateway
    /// forwards to `a.b.c.d`.
    Nat64,
    /// 6to4 `2002:AABB:CCDD::/48` (RFC 3056): a 6to4 relay forwards to `a.b.c.d`.
    SixToFour,
}

impl fmt::Display for Ipv4Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv4Embedding::Mapped => "IPv4-mapped",
            Ipv4Embedding::Compatible => "IPv4-compatible",
            Ipv4Embedding::Nat64 => "NAT64",
            Ipv4Embedding::SixToFour => "6to4",
        })
    }
}

/// An IPv4 address found inside an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmbeddedIpv4 {
    /// Which IPv6 form carried it.
    pub form: Ipv4Embedding,
    /// The IPv4 address itself.
    pub addr: Ipv4Addr,
}

impl fmt::Display for EmbeddedIpv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {} form", self.addr, self.form)
    }
}

/// The result of [`inspect`]: the class, and the embedded IPv4 address that
/// decided it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    /// The class that decides whether the address is allowed.
    pub class: AddressClass,
    /// For IPv6 addresses that embed an IPv4 address: that address, whose
    /// IPv4 class is the one reported (see [`embedded_ipv4`]).
    pub embedded: Option<EmbeddedIpv4>,
}

/// Azure's WireServer / platform endpoint: public-looking, internal in effect.
const AZURE_WIRESERVER: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);
/// AWS Instance Metadata Service over IPv6 (Nitro instances).
const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Classifies an address. Shorthand for `inspect(ip).class`.
pub fn classify(ip: IpAddr) -> AddressClass {
    inspect(ip).class
}

/// Classifies an address and reports the embedded IPv4 address that decided
/// the class, if the address is an IPv6 form that carries one.
pub fn inspect(ip: IpAddr) -> Classification {
    match ip {
        IpAddr::V4(v4) => Classification { class: classify_v4(v4), embedded: None },
        IpAddr::V6(v6) => inspect_v6(v6),
    }
}

/// The IPv4 address embedded in `ip`, if `ip` is IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`, except `::` and `::1`, which
/// are the IPv6 unspecified and loopback addresses), in the NAT64 well-known
/// prefix (`64:ff9b::/96`) or 6to4 (`2002::/16`, the IPv4 address in bits
/// 16–47).
///
/// These are the forms in which a request to an IPv6 address can end up at an
/// IPv4 destination, which is why the guard judges them by the IPv4 address.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<EmbeddedIpv4> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    let form = match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Ipv4Embedding::Mapped,
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => return None,
        [0, 0, 0, 0, 0, 0, _, _] => Ipv4Embedding::Compatible,
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Ipv4Embedding::Nat64,
        [0x2002, hi, lo, ..] => {
            return Some(EmbeddedIpv4 { form: Ipv4Embedding::SixToFour, addr: v4(hi, lo) });
        }
        _ => return None,
    };
    Some(EmbeddedIpv4 { form, addr: v4(s[6], s[7]) })
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass as C;
    if ip == Ipv4Addr::BROADCAST {
        return C::Broadcast;
    }
    if ip == AZURE_WIRESERVER {
        return C::Metadata;
    }
    match ip.octets() {
        [0, ..] => C::Unspecified,
        [10, ..] => C::Private,
        [100, 64..=127, ..] => C::Cgnat,
        [127, ..] => C::Loopback,
        [169, 254, ..] => C::LinkLocal,
        [172, 16..=31, ..] => C::Private,
        [192, 0, 0, _] => C::ProtocolAssignments,
        [192, 0, 2, _] => C::Documentation,
        [192, 88, 99, _] => C::SixToFourRelay,
        [192, 168, ..] => C::Private,
        [198, 18..=19, ..] => C::Benchmarking,
        [198, 51, 100, _] => C::Documentation,
        [203, 0, 113, _] => C::Documentation,
        [224..=239, ..] => C::Multicast,
        [240..=255, ..] => C::Reserved,
        _ => C::Public,
    }
}

fn inspect_v6(ip: Ipv6Addr) -> Classification {
    use AddressClass as C;
    let plain = |class| Classification { class, embedded: None };
    if ip.is_unspecified() {
        return plain(C::Unspecified);
    }
    if ip.is_loopback() {
        return plain(C::Loopback);
    }
    if let Some(embedded) = embedded_ipv4(ip) {
        let mut class = classify_v4(embedded.addr);
        // A public address in the deprecated IPv4-compatible form is not a
        // real destination; no legitimate agent URL uses it.
        if embedded.form == Ipv4Embedding::Compatible && class == C::Public {
            class = C::Reserved;
        }
        return Classification { class, embedded: Some(embedded) };
    }
    if ip == AWS_IMDS_V6 {
        return plain(C::Metadata);
    }
    let s = ip.segments();
    let class = match s {
        [0x0100, 0, 0, 0, ..] => C::DiscardOnly,
        [0x2001, 0x0db8, ..] => C::Documentation,
        [0x3fff, second, ..] if second < 0x1000 => C::Documentation,
        [0x2001, second, ..] if second < 0x0200 => C::ProtocolAssignments,
        [first, ..] if first & 0xfe00 == 0xfc00 => C::Private,
        [first, ..] if first & 0xffc0 == 0xfe80 => C::LinkLocal,
        [first, ..] if first & 0xff00 == 0xff00 => C::Multicast,
        [first, ..] if first & 0xe000 == 0x2000 => C::Public,
        _ => C::Reserved,
    };
    plain(class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass as C;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Every IPv4 rule, with addresses at the edges of each range.
    const V4_TABLE: &[(&str, AddressClass)] = &[
        ("0.0.0.0", C::Unspecified),
        ("0.1.2.3", C::Unspecified),
        ("0.255.255.255", C::Unspecified),
        ("1.0.0.0", C::Public),
        ("9.255.255.255", C::Public),
        ("10.0.0.0", C::Private),
        ("10.255.255.255", C::Private),
        ("11.0.0.0", C::Public),
        ("100.63.255.255", C::Public),
        ("100.64.0.0", C::Cgnat),
        ("100.100.100.200", C::Cgnat),
        ("100.127.255.255", C::Cgnat),
        ("100.128.0.0", C::Public),
        ("126.255.255.255", C::Public),
        ("127.0.0.1", C::Loopback),
        ("127.255.255.254", C::Loopback),
        ("128.0.0.0", C::Public),
        ("168.63.129.16", C::Metadata),
        ("168.63.129.17", C::Public),
        ("169.253.255.255", C::Public),
        ("169.254.0.0", C::LinkLocal),
        ("169.254.169.254", C::LinkLocal),
        ("169.254.255.255", C::LinkLocal),
        ("169.255.0.0", C::Public),
        ("172.15.255.255", C::Public),
        ("172.16.0.0", C::Private),
        ("172.31.255.255", C::Private),
        ("172.32.0.0", C::Public),
        ("192.0.0.0", C::ProtocolAssignments),
        ("192.0.0.255", C::ProtocolAssignments),
        ("192.0.1.0", C::Public),
        ("192.0.2.0", C::Documentation),
        ("192.0.2.255", C::Documentation),
        ("192.0.3.0", C::Public),
        ("192.88.98.255", C::Public),
        ("192.88.99.1", C::SixToFourRelay),
        ("192.88.100.0", C::Public),
        ("192.167.255.255", C::Public),
        ("192.168.0.0", C::Private),
        ("192.168.255.255", C::Private),
        ("192.169.0.0", C::Public),
        ("198.17.255.255", C::Public),
        ("198.18.0.0", C::Benchmarking),
        ("198.19.255.255", C::Benchmarking),
        ("198.20.0.0", C::Public),
        ("198.51.99.255", C::Public),
        ("198.51.100.7", C::Documentation),
        ("198.51.101.0", C::Public),
        ("203.0.112.255", C::Public),
        ("203.0.113.9", C::Documentation),
        ("203.0.114.0", C::Public),
        ("223.255.255.255", C::Public),
        ("224.0.0.0", C::Multicast),
        ("239.255.255.255", C::Multicast),
        ("240.0.0.0", C::Reserved),
        ("254.255.255.255", C::Reserved),
        ("255.255.255.254", C::Reserved),
        ("255.255.255.255", C::Broadcast),
        ("8.8.8.8", C::Public),
        ("93.184.215.14", C::Public),
    ];

    #[test]
    fn ipv4_rules() {
        for &(addr, want) in V4_TABLE {
            let got = inspect(IpAddr::V4(v4(addr)));
            assert_eq!(got.class, want, "{addr}");
            assert_eq!(got.embedded, None, "{addr}");
        }
    }

    /// The IPv6 forms that embed `addr`, paired with their embedding kind.
    fn embeddings(addr: Ipv4Addr) -> Vec<(Ipv6Addr, Ipv4Embedding)> {
        let [a, b, c, d] = addr.octets();
        let hi = u16::from_be_bytes([a, b]);
        let lo = u16::from_be_bytes([c, d]);
        vec![
            (addr.to_ipv6_mapped(), Ipv4Embedding::Mapped),
            (Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo), Ipv4Embedding::Compatible),
            (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo), Ipv4Embedding::Nat64),
            (Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1), Ipv4Embedding::SixToFour),
        ]
    }

    #[test]
    fn every_ipv4_rule_applies_to_every_ipv6_embedding() {
        for &(addr, want) in V4_TABLE {
            let addr = v4(addr);
            for (ip6, form) in embeddings(addr) {
                // `::` and `::1` are IPv6's own unspecified and loopback
                // addresses, not IPv4-compatible forms of 0.0.0.0 / 0.0.0.1.
                if matches!(ip6.segments(), [0, 0, 0, 0, 0, 0, 0, 0 | 1]) {
                    continue;
                }
                let got = inspect(IpAddr::V6(ip6));
                let want = if form == Ipv4Embedding::Compatible && want == C::Public { C::Reserved } else { want };
                assert_eq!(got.class, want, "{ip6} ({form} {addr})");
                assert_eq!(got.embedded, Some(EmbeddedIpv4 { form, addr }), "{ip6}");
            }
        }
    }

    #[test]
    fn ipv6_rules() {
        /// (address, class, embedded IPv4 form and address)
        type Row = (&'static str, AddressClass, Option<(Ipv4Embedding, &'static str)>);
        let table: &[Row] = &[
            ("::", C::Unspecified, None),
            ("::1", C::Loopback, None),
            ("::2", C::Unspecified, Some((Ipv4Embedding::Compatible, "0.0.0.2"))),
            ("::ffff:127.0.0.1", C::Loopback, Some((Ipv4Embedding::Mapped, "127.0.0.1"))),
            ("::ffff:169.254.169.254", C::LinkLocal, Some((Ipv4Embedding::Mapped, "169.254.169.254"))),
            ("::ffff:a9fe:a9fe", C::LinkLocal, Some((Ipv4Embedding::Mapped, "169.254.169.254"))),
            ("::a9fe:a9fe", C::LinkLocal, Some((Ipv4Embedding::Compatible, "169.254.169.254"))),
            ("::127.0.0.1", C::Loopback, Some((Ipv4Embedding::Compatible, "127.0.0.1"))),
            ("::8.8.8.8", C::Reserved, Some((Ipv4Embedding::Compatible, "8.8.8.8"))),
            ("::ffff:8.8.8.8", C::Public, Some((Ipv4Embedding::Mapped, "8.8.8.8"))),
            ("64:ff9b::8.8.8.8", C::Public, Some((Ipv4Embedding::Nat64, "8.8.8.8"))),
            ("64:ff9b::10.0.0.1", C::Private, Some((Ipv4Embedding::Nat64, "10.0.0.1"))),
            ("64:ff9b:1::a00:1", C::Reserved, None),
            ("2002:a9fe:a9fe::", C::LinkLocal, Some((Ipv4Embedding::SixToFour, "169.254.169.254"))),
            ("2002:7f00:1::1", C::Loopback, Some((Ipv4Embedding::SixToFour, "127.0.0.1"))),
            ("2002:808:808::1", C::Public, Some((Ipv4Embedding::SixToFour, "8.8.8.8"))),
            ("::ffff:0:a9fe:a9fe", C::Reserved, None),
            ("100::", C::DiscardOnly, None),
            ("100::ffff:ffff:ffff:ffff", C::DiscardOnly, None),
            ("100:0:0:1::", C::Reserved, None),
            ("2001:db8::1", C::Documentation, None),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", C::Documentation, None),
            ("2001:db9::1", C::Public, None),
            ("3fff::1", C::Documentation, None),
            ("3fff:fff:ffff::1", C::Documentation, None),
            ("3fff:1000::1", C::Public, None),
            ("2001::1", C::ProtocolAssignments, None),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", C::ProtocolAssignments, None),
            ("2001:1ff::1", C::ProtocolAssignments, None),
            ("2001:200::1", C::Public, None),
            ("fc00::1", C::Private, None),
            ("fd12:3456:789a::1", C::Private, None),
            ("fdff:ffff::1", C::Private, None),
            ("fd00:ec2::254", C::Metadata, None),
            ("fd00:ec2::253", C::Private, None),
            ("fe80::1", C::LinkLocal, None),
            ("febf:ffff::1", C::LinkLocal, None),
            ("fec0::1", C::Reserved, None),
            ("ff02::1", C::Multicast, None),
            ("ff0e::101", C::Multicast, None),
            ("2606:4700:4700::1111", C::Public, None),
            ("2a00:1450:4001:80b::200e", C::Public, None),
            ("1fff:ffff::1", C::Reserved, None),
            ("4000::1", C::Reserved, None),
            ("5f00::1", C::Reserved, None),
        ];
        for &(addr, want, embedded) in table {
            let got = inspect(IpAddr::V6(v6(addr)));
            assert_eq!(got.class, want, "{addr}");
            let want_embedded = embedded.map(|(form, a)| EmbeddedIpv4 { form, addr: v4(a) });
            assert_eq!(got.embedded, want_embedded, "{addr}");
            assert_eq!(classify(IpAddr::V6(v6(addr))), want, "{addr}");
        }
    }

    #[test]
    fn mode_matrix() {
        use NetworkMode::{Cluster, Dev, Strict};
        for class in AddressClass::ALL {
            let want: &[NetworkMode] = match class {
                C::Public => &[Strict, Cluster, Dev],
                C::Private => &[Cluster, Dev],
                C::Loopback => &[Dev],
                _ => &[],
            };
            for mode in NetworkMode::ALL {
                assert_eq!(class.allowed_in(mode), want.contains(&mode), "{class} in {mode}");
            }
            assert_eq!(class.is_never_allowed(), want.is_empty(), "{class}");
        }
    }

    #[test]
    fn address_mode_matrix() {
        // (address, allowed in strict, cluster, dev)
        let table: &[(&str, [bool; 3])] = &[
            ("8.8.8.8", [true, true, true]),
            ("2606:4700:4700::1111", [true, true, true]),
            ("10.1.2.3", [false, true, true]),
            ("172.20.0.1", [false, true, true]),
            ("192.168.1.1", [false, true, true]),
            ("fd00::1", [false, true, true]),
            ("::ffff:10.0.0.1", [false, true, true]),
            ("127.0.0.1", [false, false, true]),
            ("::1", [false, false, true]),
            ("::ffff:127.0.0.1", [false, false, true]),
            ("169.254.169.254", [false, false, false]),
            ("fe80::1", [false, false, false]),
            ("fd00:ec2::254", [false, false, false]),
            ("100.64.0.1", [false, false, false]),
            ("0.0.0.0", [false, false, false]),
            ("::", [false, false, false]),
            ("224.0.0.1", [false, false, false]),
            ("ff02::1", [false, false, false]),
        ];
        for &(addr, allowed) in table {
            let ip: IpAddr = addr.parse().unwrap();
            for (mode, want) in NetworkMode::ALL.into_iter().zip(allowed) {
                assert_eq!(classify(ip).allowed_in(mode), want, "{addr} in {mode}");
            }
        }
    }

    #[test]
    fn descriptions_and_policies() {
        assert_eq!(C::LinkLocal.to_string(), "link-local/metadata");
        assert_eq!(C::LinkLocal.description(), "a link-local/metadata address");
        assert_eq!(C::LinkLocal.policy(), "which is never allowed");
        assert_eq!(C::Loopback.policy(), "allowed only in dev mode");
        assert_eq!(C::Private.policy(), "allowed only in cluster or dev mode");
        assert_eq!(C::Public.policy(), "");
        for class in AddressClass::ALL {
            let d = class.description();
            assert!(d.starts_with("a ") || d.starts_with("an "), "{d}");
            assert!(d.ends_with(" address"), "{d}");
        }
    }
}
