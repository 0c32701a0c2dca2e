//! The pure policy: which names and which addresses a sandbox may reach.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use kennel_core::plan::NetworkMode;

/// What the sandbox may reach.
///
/// `allow` and `deny` entries are either an exact name (`example.com`, also an
/// IP literal such as `203.0.113.7` or `2001:db8::1`) or a wildcard
/// (`*.example.com`: any subdomain, at any depth, but not the apex).
/// Matching is case-insensitive and ignores one trailing dot. `deny` wins over
/// `allow`, and is honoured in every mode that allows anything (also `open`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: NetworkMode,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

impl Default for Policy {
    /// The safe default: nothing is reachable.
    fn default() -> Self {
        Self {
            mode: NetworkMode::None,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// Why a connection was refused. [`Reason::code`] is what appears in the
/// `X-Kennel-Reason` header and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `--network none`.
    ModeNone,
    /// Allowlist mode and the name is not on the allow list.
    NotAllowlisted,
    /// The name matches a deny rule.
    Denied,
    /// The name resolves to (or is) a private, local, link-local, metadata or
    /// otherwise non-public address.
    PrivateAddress,
    /// The name did not resolve.
    ResolveFailed,
    /// CONNECT to a TLS port whose ClientHello names another server.
    SniMismatch,
    /// CONNECT to a TLS port whose first bytes are not a TLS ClientHello.
    NotTls,
    /// The request could not be understood (bad host, origin-form request, …).
    BadRequest,
    /// The policy allowed the connection but the destination (or the upstream
    /// proxy) could not be reached.
    ConnectFailed,
    /// The request carries a brokered credential's placeholder where the
    /// credential is not bound (another host, method, path or place in the
    /// request, or plain HTTP).
    CredentialNotBound,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Self::ModeNone,
        Self::NotAllowlisted,
        Self::Denied,
        Self::PrivateAddress,
        Self::ResolveFailed,
        Self::SniMismatch,
        Self::NotTls,
        Self::BadRequest,
        Self::ConnectFailed,
        Self::CredentialNotBound,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::ModeNone => "mode-none",
            Self::NotAllowlisted => "not-allowlisted",
            Self::Denied => "denied",
            Self::PrivateAddress => "private-address",
            Self::ResolveFailed => "resolve-failed",
            Self::SniMismatch => "sni-mismatch",
            Self::NotTls => "not-tls",
            Self::BadRequest => "bad-request",
            Self::ConnectFailed => "connect-failed",
            Self::CredentialNotBound => "credential-not-bound",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.code() == code)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Reason),
}

impl Verdict {
    pub fn is_allowed(self) -> bool {
        self == Verdict::Allow
    }
}

/// May the sandbox connect to this name (or IP literal)? Pure: no DNS.
///
/// `none` refuses everything; a deny match refuses in every other mode;
/// `allowlist` then needs an allow match; `restricted` and `open` allow any
/// name (the address check still applies in `restricted`). A name that is not
/// a syntactically valid host is refused as `bad-request`.
pub fn check_name(policy: &Policy, host: &str) -> Verdict {
    if policy.mode == NetworkMode::None {
        return Verdict::Deny(Reason::ModeNone);
    }
    let Some(host) = normalize_host(host) else {
        return Verdict::Deny(Reason::BadRequest);
    };
    if policy
        .deny
        .iter()
        .any(|pattern| pattern_matches(pattern, &host))
    {
        return Verdict::Deny(Reason::Denied);
    }
    match policy.mode {
        NetworkMode::Allowlist => {
            if policy
                .allow
                .iter()
                .any(|pattern| pattern_matches(pattern, &host))
            {
                Verdict::Allow
            } else {
                Verdict::Deny(Reason::NotAllowlisted)
            }
        }
        NetworkMode::None => Verdict::Deny(Reason::ModeNone),
        NetworkMode::Restricted | NetworkMode::Open => Verdict::Allow,
    }
}

/// May the sandbox connect to this address? Pure.
///
/// `none` refuses, `open` allows, `allowlist` and `restricted` allow public
/// addresses only (see [`is_public`]).
pub fn check_addr(policy: &Policy, addr: IpAddr) -> Verdict {
    match policy.mode {
        NetworkMode::None => Verdict::Deny(Reason::ModeNone),
        NetworkMode::Open => Verdict::Allow,
        NetworkMode::Allowlist | NetworkMode::Restricted => {
            if is_public(addr) {
                Verdict::Allow
            } else {
                Verdict::Deny(Reason::PrivateAddress)
            }
        }
    }
}

/// True for globally routable unicast addresses; false for loopback, RFC 1918,
/// CGNAT, link-local (cloud metadata included), ULA, unspecified, multicast,
/// broadcast, 0/8, reserved and documentation ranges, and for every IPv6 form
/// that embeds such an IPv4 address (v4-mapped, v4-compatible, NAT64, 6to4).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !v4_blocked(v4),
        IpAddr::V6(v6) => !v6_blocked(v6),
    }
}

const V4_BLOCKED: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // RFC 1918
    ([100, 64, 0, 0], 10),   // CGNAT
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata
    ([172, 16, 0, 0], 12),   // RFC 1918
    ([192, 0, 0, 0], 24), // IETF protocol assignments (incl. 192.0.0.192 metadata on some clouds)
    ([192, 0, 2, 0], 24), // TEST-NET-1
    ([192, 88, 99, 0], 24), // 6to4 relay anycast
    ([192, 168, 0, 0], 16), // RFC 1918
    ([198, 18, 0, 0], 15), // benchmarking
    ([198, 51, 100, 0], 24), // TEST-NET-2
    ([203, 0, 113, 0], 24), // TEST-NET-3
    ([224, 0, 0, 0], 4),  // multicast
    ([240, 0, 0, 0], 4),  // reserved, broadcast 255.255.255.255
];

fn v4_blocked(addr: Ipv4Addr) -> bool {
    let bits = u32::from(addr);
    V4_BLOCKED
        .iter()
        .any(|&(net, prefix)| in_v4(bits, u32::from_be_bytes(net), prefix))
}

fn in_v4(bits: u32, net: u32, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    bits & mask == net & mask
}

fn in_v6(bits: u128, net: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    };
    bits & mask == net & mask
}

const fn v6(segments: [u16; 8]) -> u128 {
    let mut out = 0u128;
    let mut i = 0;
    while i < 8 {
        out = (out << 16) | segments[i] as u128;
        i += 1;
    }
    out
}

const V6_BLOCKED: &[(u128, u8)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 96), // ::, ::1, IPv4-compatible (deprecated)
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0]), 96), // IPv4-translated (SIIT)
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48), // local-use NAT64
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64), // discard-only
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23), // IETF protocol assignments (Teredo, ORCHID, …)
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32), // documentation
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20), // documentation (RFC 9637)
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0]), 16), // SRv6 SIDs
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7), // ULA
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10), // link-local
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10), // site-local (deprecated)
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8), // multicast
];

fn v6_blocked(addr: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(addr) {
        return v4_blocked(v4);
    }
    let bits = u128::from(addr);
    V6_BLOCKED
        .iter()
        .any(|&(net, prefix)| in_v6(bits, net, prefix))
}

/// The IPv4 address an IPv6 address stands for, where the IPv6 form is a way
/// of reaching that IPv4 host: v4-mapped (`::ffff:a.b.c.d`), NAT64 well-known
/// prefix (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(addr);
    if in_v6(bits, v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96)
        || in_v6(bits, v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96)
    {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if in_v6(bits, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Is `addr` inside `net/prefix`? A v4-mapped IPv6 address is compared as its
/// IPv4 address. Families never match each other otherwise.
pub(crate) fn cidr_contains(net: IpAddr, prefix: u8, addr: IpAddr) -> bool {
    match (canonical(net), canonical(addr)) {
        (IpAddr::V4(net), IpAddr::V4(addr)) => {
            prefix <= 32 && in_v4(u32::from(addr), u32::from(net), prefix)
        }
        (IpAddr::V6(net), IpAddr::V6(addr)) => {
            prefix <= 128 && in_v6(u128::from(addr), u128::from(net), prefix)
        }
        _ => false,
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Lower-case, without brackets or one trailing dot; IP literals in their
/// canonical text form. `None` when this is not a valid host name.
pub(crate) fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    labels_ok.then_some(host)
}

/// Does a normalized host match an allow/deny pattern?
pub(crate) fn pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim();
    if let Some(suffix) = pattern.strip_prefix("*.") {
        let Some(suffix) = normalize_host(suffix) else {
            return false;
        };
        if host.parse::<IpAddr>().is_ok() {
            return false;
        }
        return host.len() > suffix.len() + 1
            && host.ends_with(&suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
    }
    normalize_host(pattern).is_some_and(|p| p == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: NetworkMode, allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn allowlist_exact_and_wildcard() {
        let p = policy(
            NetworkMode::Allowlist,
            &["example.com", "*.github.com"],
            &[],
        );
        assert_eq!(check_name(&p, "example.com"), Verdict::Allow);
        assert_eq!(check_name(&p, "EXAMPLE.com."), Verdict::Allow);
        assert_eq!(
            check_name(&p, "www.example.com"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
        assert_eq!(check_name(&p, "api.github.com"), Verdict::Allow);
        assert_eq!(check_name(&p, "a.b.github.com"), Verdict::Allow);
        // A wildcard does not match the apex, nor a name that merely ends alike.
        assert_eq!(
            check_name(&p, "github.com"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
        assert_eq!(
            check_name(&p, "evilgithub.com"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
        assert_eq!(
            check_name(&p, "github.com.evil.net"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
        assert_eq!(
            check_name(&p, "other.org"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
    }

    #[test]
    fn deny_wins_over_allow_in_every_mode() {
        let allow = ["*.example.com", "secret.example.com"];
        let deny = ["secret.example.com", "*.internal.example.com"];
        for mode in [
            NetworkMode::Allowlist,
            NetworkMode::Restricted,
            NetworkMode::Open,
        ] {
            let p = policy(mode, &allow, &deny);
            assert_eq!(
                check_name(&p, "secret.example.com"),
                Verdict::Deny(Reason::Denied),
                "{mode:?}"
            );
            assert_eq!(
                check_name(&p, "a.internal.example.com"),
                Verdict::Deny(Reason::Denied)
            );
            assert_eq!(check_name(&p, "www.example.com"), Verdict::Allow);
        }
    }

    #[test]
    fn modes() {
        let none = policy(NetworkMode::None, &["example.com"], &[]);
        assert_eq!(
            check_name(&none, "example.com"),
            Verdict::Deny(Reason::ModeNone)
        );
        assert_eq!(
            check_addr(&none, ip("93.184.216.34")),
            Verdict::Deny(Reason::ModeNone)
        );
        let restricted = policy(NetworkMode::Restricted, &[], &[]);
        assert_eq!(check_name(&restricted, "anything.org"), Verdict::Allow);
        assert_eq!(
            check_addr(&restricted, ip("10.0.0.1")),
            Verdict::Deny(Reason::PrivateAddress)
        );
        assert_eq!(check_addr(&restricted, ip("93.184.216.34")), Verdict::Allow);
        let open = policy(NetworkMode::Open, &[], &[]);
        assert_eq!(check_name(&open, "anything.org"), Verdict::Allow);
        assert_eq!(check_addr(&open, ip("10.0.0.1")), Verdict::Allow);
        assert_eq!(check_addr(&open, ip("169.254.169.254")), Verdict::Allow);
    }

    #[test]
    fn ip_literals_need_an_exact_allow_entry() {
        let p = policy(
            NetworkMode::Allowlist,
            &["93.184.216.34", "[2606:2800:220:1::1]", "*.34"],
            &[],
        );
        assert_eq!(check_name(&p, "93.184.216.34"), Verdict::Allow);
        assert_eq!(check_name(&p, "2606:2800:220:1:0:0:0:1"), Verdict::Allow);
        assert_eq!(check_name(&p, "[2606:2800:220:1::1]"), Verdict::Allow);
        assert_eq!(
            check_name(&p, "1.2.3.34"),
            Verdict::Deny(Reason::NotAllowlisted)
        );
    }

    #[test]
    fn invalid_names_are_bad_requests() {
        let p = policy(NetworkMode::Restricted, &[], &[]);
        for bad in [
            "",
            ".",
            "a..b",
            "exa mple.com",
            "a/b",
            "x@y.com",
            &"a".repeat(64),
        ] {
            assert_eq!(
                check_name(&p, bad),
                Verdict::Deny(Reason::BadRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn private_ranges_are_refused() {
        let p = policy(NetworkMode::Allowlist, &[], &[]);
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.192",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:192.168.0.1",
            "::ffff:172.16.0.1",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:0a00:0001::1",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "100::1",
            "::ffff:0:10.0.0.1",
        ];
        for text in refused {
            assert_eq!(
                check_addr(&p, ip(text)),
                Verdict::Deny(Reason::PrivateAddress),
                "{text}"
            );
        }
        let allowed = [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:93.184.216.34",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ];
        for text in allowed {
            assert_eq!(check_addr(&p, ip(text)), Verdict::Allow, "{text}");
        }
    }

    #[test]
    fn cidr_matching() {
        assert!(cidr_contains(ip("127.0.0.0"), 8, ip("127.1.2.3")));
        assert!(cidr_contains(ip("127.0.0.0"), 8, ip("::ffff:127.0.0.1")));
        assert!(!cidr_contains(ip("127.0.0.0"), 8, ip("128.0.0.1")));
        assert!(cidr_contains(ip("::1"), 128, ip("::1")));
        assert!(!cidr_contains(ip("::1"), 128, ip("127.0.0.1")));
        assert!(cidr_contains(ip("0.0.0.0"), 0, ip("8.8.8.8")));
        assert!(!cidr_contains(ip("10.0.0.0"), 33, ip("10.0.0.0")));
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
    }
}
