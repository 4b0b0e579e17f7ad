//! Which webhook destinations an API client may choose (docs/behaviour.md §7, destinations):
//! public addresses only, unless the operator allows more (`--webhook-allow`). Pure functions
//! over a parsed URL and addresses, so they are unit-tested and fuzzed without a network; the
//! delivery side applies them to the literal address of a URL and, through its resolver, to
//! every address a host name resolves to before connecting to it.
//!
//! URLs configured by the operator (`--webhook-url`, failover) are trusted and never checked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// What an address is, for the policy: public, or the class that refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), shared address space (100.64/10), unique
    /// local (fc00::/7), site-local (fec0::/10).
    Private,
    /// 169.254/16 (cloud metadata services live there), fe80::/10.
    LinkLocal,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Documentation, benchmarking, protocol assignments, 240/4 and broadcast, 6to4 and
    /// Teredo tunnels (they embed an IPv4 address), and IPv6 outside 2000::/3.
    Reserved,
}

impl AddressClass {
    /// How a refusal names the class.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "the unspecified address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// The class of `ip`. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses
/// are classed by the IPv4 address they carry, which is where a connection goes.
#[must_use]
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, ..) => AddressClass::Unspecified,
        (127, ..) => AddressClass::Loopback,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) | (100, 64..=127, _) => AddressClass::Private,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, ..) => AddressClass::Multicast,
        (240..=255, ..)
        | (192, 0, 0 | 2)
        | (192, 88, 99)
        | (198, 18..=19, _)
        | (198, 51, 100)
        | (203, 0, 113) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    match s[0] {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        0xfc00..=0xfdff | 0xfec0..=0xfeff => AddressClass::Private,
        0xfe80..=0xfebf => AddressClass::LinkLocal,
        0xff00..=0xffff => AddressClass::Multicast,
        // Global unicast, less IETF protocol assignments (2001::/23, Teredo among them),
        // documentation (2001:db8::/32, 3fff::/20) and 6to4 (2002::/16).
        0x2001 if s[1] < 0x0200 || s[1] == 0x0db8 => AddressClass::Reserved,
        0x2002 | 0x3fff => AddressClass::Reserved,
        0x2000..=0x3fff => AddressClass::Public,
        _ => AddressClass::Reserved,
    }
}

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a URL at all.
    NotAUrl(String),
    /// Not `http` or `https`.
    Scheme(String),
    /// No host to send to.
    NoHost,
    /// A literal address outside the allowed ones.
    Address(IpAddr, AddressClass),
    /// A host name that resolved to no allowed address.
    Resolved(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAUrl(why) => write!(f, "it is not a valid URL ({why})"),
            Self::Scheme(scheme) => write!(f, "its scheme '{scheme}' is not http or https"),
            Self::NoHost => write!(f, "it names no host"),
            Self::Address(ip, class) => write!(f, "{ip} is {}", class.describe()),
            Self::Resolved(host) => write!(f, "{host} resolves to no public or allowed address"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Where an allowed URL goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A literal address, allowed.
    Address(IpAddr),
    /// A host name: every address it resolves to is checked before connecting, unless the
    /// name itself is on the allow list (`trusted`).
    Name {
        /// The host name, lowercase.
        host: String,
        /// Named on the allow list: any address it resolves to is used.
        trusted: bool,
    },
}

/// The operator's exceptions (`--webhook-allow`): networks (CIDR, or a single address) and
/// host names (exact, case-insensitive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl DestinationPolicy {
    /// From `--webhook-allow` entries: `10.0.0.0/8`, `fd00::/8`, `192.168.1.5`, `hooks.internal`.
    ///
    /// # Errors
    /// An entry that is neither a network, an address nor a host name.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if let Some(net) = network(entry) {
                policy.nets.push(net);
            } else if let Some(host) = host_name(entry) {
                policy.hosts.push(host);
            } else {
                return Err(format!(
                    "webhook allow entry '{entry}' is neither a network (CIDR), an address nor a host name"
                ));
            }
        }
        Ok(policy)
    }

    /// Whether a connection to `ip` is allowed: public, or inside an allowed network.
    #[must_use]
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        classify(ip) == AddressClass::Public || self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether `host` is named on the allow list.
    #[must_use]
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Where `url` would send, if an API client may choose it.
    ///
    /// # Errors
    /// Not an http(s) URL with a host, or a literal address that is not allowed.
    pub fn check_url(&self, url: &str) -> Result<Destination, Refusal> {
        let url = Url::parse(url).map_err(|e| Refusal::NotAUrl(e.to_string()))?;
        self.check(&url)
    }

    /// As [`DestinationPolicy::check_url`], for a parsed URL.
    ///
    /// # Errors
    /// As [`DestinationPolicy::check_url`].
    pub fn check(&self, url: &Url) -> Result<Destination, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let ip = match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Domain(name)) => {
                let host = name.to_ascii_lowercase();
                let trusted = self.allows_host(&host);
                return Ok(Destination::Name { host, trusted });
            }
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.allows_address(ip) {
            Ok(Destination::Address(ip))
        } else {
            Err(Refusal::Address(ip, classify(ip)))
        }
    }

    /// The addresses `host` resolved to that a connection may use: all of them for a host on
    /// the allow list, else the allowed ones.
    ///
    /// # Errors
    /// None is left.
    pub fn filter_resolved(
        &self,
        host: &str,
        resolved: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let trusted = self.allows_host(host);
        let allowed: Vec<IpAddr> =
            resolved.into_iter().filter(|ip| trusted || self.allows_address(*ip)).collect();
        if allowed.is_empty() { Err(Refusal::Resolved(host.to_owned())) } else { Ok(allowed) }
    }
}

/// A network (`address/prefix`) or an address, if `entry` is one. Spelled strictly: the
/// standard address syntax (no leading zeros, which some readers take for octal) and a
/// decimal prefix.
fn network(entry: &str) -> Option<IpNet> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => {
            let digits =
                !prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit());
            (address, Some(prefix).filter(|_| digits)?.parse::<u8>().ok()?)
        }
        None => (entry, if entry.contains(':') { 128 } else { 32 }),
    };
    IpNet::new(address.parse::<IpAddr>().ok()?, prefix).ok().map(|net| net.trunc())
}

/// A host name as the allow list keeps it (lowercase, no final dot), if `entry` is one.
fn host_name(entry: &str) -> Option<String> {
    let name = entry.strip_suffix('.').unwrap_or(entry);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
    };
    // A name whose last label is a number is read as an IPv4 address by URL parsers.
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit()) || last.to_ascii_lowercase().starts_with("0x");
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) && !numeric)
        .then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_refused_class_v4_and_v6() {
        let cases = [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("fd00:ec2::254", AddressClass::Private),
            ("fec0::1", AddressClass::Private),
            ("169.254.169.254", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("224.0.0.1", AddressClass::Multicast),
            ("239.255.255.250", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("240.0.0.1", AddressClass::Reserved),
            ("255.255.255.255", AddressClass::Reserved),
            ("192.0.2.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("198.51.100.7", AddressClass::Reserved),
            ("203.0.113.7", AddressClass::Reserved),
            ("192.0.0.8", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
            ("2001::1", AddressClass::Reserved),
            ("2002:7f00:1::", AddressClass::Reserved),
            ("3fff::1", AddressClass::Reserved),
            ("100::1", AddressClass::Reserved),
            ("::127.0.0.1", AddressClass::Reserved),
            // Addresses that carry an IPv4 address go where it goes.
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::LinkLocal),
            ("64:ff9b::a00:1", AddressClass::Private),
        ];
        let policy = DestinationPolicy::default();
        for (text, class) in cases {
            assert_eq!(classify(ip(text)), class, "{text}");
            assert!(!policy.allows_address(ip(text)), "{text}");
            let url =
                if text.contains(':') { format!("http://[{text}]:8/h") } else { format!("http://{text}/h") };
            assert_eq!(policy.check_url(&url), Err(Refusal::Address(ip(text), class)), "{url}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(classify(ip(public)), AddressClass::Public, "{public}");
        }
    }

    #[test]
    fn odd_spellings_of_an_address_are_the_address() {
        let policy = DestinationPolicy::default();
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://[::ffff:7f00:1]/",
            "HTTP://127.0.0.1./",
        ] {
            assert!(
                matches!(policy.check_url(url), Err(Refusal::Address(_, AddressClass::Loopback))),
                "{url}"
            );
        }
    }

    #[test]
    fn schemes_and_shapes() {
        let policy = DestinationPolicy::default();
        assert_eq!(policy.check_url("ftp://example.com/"), Err(Refusal::Scheme("ftp".into())));
        assert_eq!(policy.check_url("file:///etc/passwd"), Err(Refusal::Scheme("file".into())));
        assert!(matches!(policy.check_url("http://[::1"), Err(Refusal::NotAUrl(_))));
        assert!(matches!(policy.check_url("no url"), Err(Refusal::NotAUrl(_))));
        assert_eq!(
            policy.check_url("https://Hooks.Example.com:8443/x?y"),
            Ok(Destination::Name { host: "hooks.example.com".into(), trusted: false })
        );
        assert_eq!(policy.check_url("https://8.8.8.8/"), Ok(Destination::Address(ip("8.8.8.8"))));
    }

    #[test]
    fn the_allow_list_opens_networks_and_names() {
        let policy = DestinationPolicy::new(&[
            "10.0.0.0/8",
            "fd00::/8",
            "192.168.1.5",
            "Hooks.Internal.",
            " localhost ",
        ])
        .unwrap();
        assert_eq!(policy.check_url("http://10.9.9.9/"), Ok(Destination::Address(ip("10.9.9.9"))));
        assert_eq!(policy.check_url("http://[fd12::1]/"), Ok(Destination::Address(ip("fd12::1"))));
        assert_eq!(policy.check_url("http://192.168.1.5/"), Ok(Destination::Address(ip("192.168.1.5"))));
        assert!(policy.check_url("http://192.168.1.6/").is_err());
        assert!(policy.check_url("http://[fc00::1]/").is_err());
        assert_eq!(
            policy.check_url("http://hooks.internal/"),
            Ok(Destination::Name { host: "hooks.internal".into(), trusted: true })
        );
        // A name on the list may resolve anywhere; any other name only to allowed addresses.
        let resolved = [ip("127.0.0.1"), ip("::1")];
        assert_eq!(policy.filter_resolved("localhost.", resolved), Ok(resolved.to_vec()));
        assert_eq!(
            policy.filter_resolved("rebinding.example", [ip("8.8.8.8"), ip("127.0.0.1"), ip("10.1.1.1")]),
            Ok(vec![ip("8.8.8.8"), ip("10.1.1.1")])
        );
        let none = DestinationPolicy::default();
        assert_eq!(none.filter_resolved("localhost", resolved), Err(Refusal::Resolved("localhost".into())));
        assert!(DestinationPolicy::new(&["10.0.0.0/33"]).unwrap_err().contains("10.0.0.0/33"));
        for odd in [
            "010.0.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.1/08x",
            "::/129",
            "010.0.0.1",
            "0x7f.1",
            "127.1",
        ] {
            assert!(DestinationPolicy::new(&[odd]).is_err(), "{odd}");
        }
        assert!(DestinationPolicy::new(&["http://x/"]).is_err());
        assert!(DestinationPolicy::new(&[""]).is_err());
    }
}
