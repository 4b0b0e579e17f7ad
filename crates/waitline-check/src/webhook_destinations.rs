//! The webhook destination policy over arbitrary URLs, allow lists and resolver answers:
//! never a panic, and never a private, loopback, link-local, multicast or unspecified
//! address let through unless an allowed network holds it (or, for a resolved name, the name
//! itself is allowed). What is private is decided here independently of the policy, with the
//! standard library's address predicates and a few ranges written out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use waitline_server::webhook_destination::{Destination, DestinationPolicy};

/// One case.
#[derive(Debug, Arbitrary)]
pub struct DestinationCase {
    /// The URL a client sends.
    pub url: UrlText,
    /// The operator's `--webhook-allow` entries.
    pub allow: Vec<AllowEntry>,
    /// What the URL's host name resolves to, if it is a name.
    pub resolved: Vec<IpAddr>,
}

/// A URL, as free text or assembled around an address.
#[derive(Debug, Arbitrary)]
pub enum UrlText {
    /// Any text.
    Raw(String),
    /// `scheme://host[:port]/path`.
    Parts {
        /// Which scheme.
        scheme: u8,
        /// The host.
        host: HostText,
        /// A port.
        port: Option<u16>,
        /// The path and what follows.
        rest: String,
    },
}

/// A URL's host, in the spellings that reach an address.
#[derive(Debug, Arbitrary)]
pub enum HostText {
    /// Dotted IPv4.
    V4(Ipv4Addr),
    /// Bracketed IPv6.
    V6(Ipv6Addr),
    /// An IPv4 address as one decimal number.
    Decimal(u32),
    /// An IPv4 address as one hexadecimal number.
    Hex(u32),
    /// A host name (or anything).
    Name(String),
}

/// An allow-list entry.
#[derive(Debug, Arbitrary)]
pub enum AllowEntry {
    /// `address/prefix`.
    Net(IpAddr, u8),
    /// An address.
    Address(IpAddr),
    /// Any text (a host name, or not).
    Text(String),
}

const SCHEMES: [&str; 5] = ["http", "https", "ftp", "file", "HTTP"];

impl UrlText {
    fn text(&self) -> String {
        match self {
            Self::Raw(s) => s.clone(),
            Self::Parts { scheme, host, port, rest } => {
                let host = match host {
                    HostText::V4(ip) => ip.to_string(),
                    HostText::V6(ip) => format!("[{ip}]"),
                    HostText::Decimal(n) => n.to_string(),
                    HostText::Hex(n) => format!("0x{n:x}"),
                    HostText::Name(s) => s.clone(),
                };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{host}{port}/{rest}", SCHEMES[usize::from(*scheme) % SCHEMES.len()])
            }
        }
    }
}

impl AllowEntry {
    fn text(&self) -> String {
        match self {
            Self::Net(ip, prefix) => format!("{ip}/{prefix}"),
            Self::Address(ip) => ip.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Whether `ip` is one a webhook must never reach unless allowed (a subset of what the policy
/// refuses: the classes of the standard library, shared address space, 240/4, and what a
/// mapped or NAT64 address carries).
#[must_use]
pub fn must_be_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return must_be_refused(IpAddr::V4(v4));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                return must_be_refused(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Whether `net` (`address/prefix`, or an address) holds `ip`, read here without the policy.
fn net_holds(net: &str, ip: IpAddr) -> bool {
    let (address, prefix) = match net.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok()),
        None => (net, None),
    };
    let Ok(address) = address.parse::<IpAddr>() else { return false };
    let (bits, a, b) = match (address, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (32, u128::from(n.to_bits()), u128::from(i.to_bits())),
        (IpAddr::V6(n), IpAddr::V6(i)) => (128, n.to_bits(), i.to_bits()),
        _ => return false,
    };
    let prefix = u32::from(prefix.unwrap_or(bits)).min(u32::from(bits));
    let shift = u32::from(bits) - prefix;
    shift >= 128 || (a >> shift) == (b >> shift)
}

/// Runs one case.
///
/// # Errors
/// A disallowed address let through, or an answer that disagrees with the URL.
pub fn check_destination(case: &DestinationCase) -> Result<(), String> {
    // The entries the policy takes (one it refuses fails the whole list at start).
    let entries: Vec<String> = case
        .allow
        .iter()
        .take(8)
        .map(AllowEntry::text)
        .filter(|e| DestinationPolicy::new(&[e]).is_ok())
        .collect();
    let policy = DestinationPolicy::new(&entries).map_err(|e| format!("entries taken one by one: {e}"))?;
    let allowed_by_net = |ip: IpAddr| entries.iter().any(|e| net_holds(e.trim(), ip));
    let url = case.url.text();
    match policy.check_url(&url) {
        Err(refusal) => {
            let _ = refusal.to_string();
        }
        Ok(Destination::Address(ip)) => {
            if must_be_refused(ip) && !allowed_by_net(ip) {
                return Err(format!("{url}: {ip} let through with allow list {entries:?}"));
            }
            // The address checked is the one a connection goes to.
            let parsed = url::Url::parse(&url).map_err(|e| format!("{url}: allowed but not a URL: {e}"))?;
            let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            if host.parse::<IpAddr>().ok() != Some(ip) {
                return Err(format!("{url}: allowed {ip}, but the URL's host is {host:?}"));
            }
        }
        Ok(Destination::Name { host, trusted }) => {
            if let Ok(addresses) = policy.filter_resolved(&host, case.resolved.iter().copied().take(16)) {
                if addresses.is_empty() {
                    return Err(format!("{url}: an empty answer counted as allowed"));
                }
                for ip in addresses {
                    if !trusted && must_be_refused(ip) && !allowed_by_net(ip) {
                        return Err(format!("{url}: {host} resolved to {ip}, let through ({entries:?})"));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_and_the_policy_agree_on_known_cases() {
        let case = |url: &str, allow: &[&str], resolved: &[&str]| DestinationCase {
            url: UrlText::Raw(url.into()),
            allow: allow.iter().map(|a| AllowEntry::Text((*a).into())).collect(),
            resolved: resolved.iter().map(|r| r.parse().unwrap()).collect(),
        };
        for c in [
            case("http://127.0.0.1/", &[], &[]),
            case("http://10.0.0.1/", &["10.0.0.0/8"], &[]),
            case("http://hooks.example/", &[], &["127.0.0.1", "8.8.8.8"]),
            case("http://hooks.example/", &["hooks.example"], &["127.0.0.1"]),
            case("http://[::ffff:a00:1]/", &["10.0.0.0/8"], &[]),
        ] {
            assert_eq!(check_destination(&c), Ok(()), "{c:?}");
        }
        assert!(must_be_refused("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!must_be_refused("8.8.8.8".parse().unwrap()));
        assert!(net_holds("10.0.0.0/8", "10.9.9.9".parse().unwrap()));
        assert!(!net_holds("10.0.0.0/8", "11.0.0.0".parse().unwrap()));
        assert!(net_holds("::/0", "::1".parse().unwrap()));
    }
}
