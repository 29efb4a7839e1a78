//! Which callers' trace context is honoured: everyone, or only the configured sources. The
//! `sampling.trusted_sources` configuration is parsed here too.

use crate::config::json::{check_keys, error, list, object, string, ConfigError};
use serde_json::Value;
use std::net::IpAddr;

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Parses `address/prefix` (a bare address is a single host).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("\"{address}\" is not an IPv4 or IPv6 address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => {
                    return Err(format!(
                        "prefix length \"{prefix}\" must be a number from 0 to {max}"
                    ))
                }
            },
        };
        let cidr = Cidr {
            network,
            prefix_len,
        };
        if !cidr.contains(network) || cidr.masked(network) != bits(network) {
            return Err(format!(
                "\"{text}\" has host bits set; did you mean {}?",
                cidr.network_text()
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, address: IpAddr) -> u128 {
        let width: u32 = if address.is_ipv4() { 32 } else { 128 };
        // The prefix length is at most the width (checked when parsed).
        let host_bits = width.saturating_sub(u32::from(self.prefix_len));
        // Clears the host bits; all of them (a /0) leaves nothing.
        bits(address) & u128::MAX.checked_shl(host_bits).unwrap_or(0)
    }

    fn network_text(&self) -> String {
        let masked = self.masked(self.network);
        let address = match self.network {
            IpAddr::V4(_) => IpAddr::from((masked as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
        };
        format!("{address}/{}", self.prefix_len)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        address.is_ipv4() == self.network.is_ipv4()
            && self.masked(address) == self.masked(self.network)
    }
}

fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// IPv4 peers on a dual-stack listener show up as `::ffff:a.b.c.d`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses Envoy's `source.address` property: `ip:port`, `[ipv6]:port` or a bare address.
pub fn parse_peer_address(text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    text.parse().ok()
}

/// A principal pattern: exact, or a prefix when it ends in `*`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PrincipalPattern(String);

impl PrincipalPattern {
    pub fn new(pattern: &str) -> PrincipalPattern {
        PrincipalPattern(pattern.to_string())
    }

    pub fn matches(&self, principal: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => principal.starts_with(prefix),
            None => principal == self.0,
        }
    }
}

/// The caller, as the proxy knows it. Queried lazily: only an untrusted-by-default
/// configuration with trusted sources needs to ask.
pub trait Peer {
    fn address(&mut self) -> Option<IpAddr>;
    fn principal(&mut self) -> Option<String>;
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct TrustPolicy {
    /// `sampling.trust_incoming`.
    pub trust_incoming: bool,
    pub cidrs: Vec<Cidr>,
    pub principals: Vec<PrincipalPattern>,
}

impl TrustPolicy {
    pub fn trust_everyone() -> TrustPolicy {
        TrustPolicy {
            trust_incoming: true,
            ..TrustPolicy::default()
        }
    }

    /// Adds the sources of `sampling.trusted_sources`.
    pub fn parse_trusted_sources(&mut self, value: &Value) -> Result<(), ConfigError> {
        let object = object(value, "sampling.trusted_sources")?;
        check_keys(
            object,
            "sampling.trusted_sources.",
            &["cidrs", "principals"],
        )?;
        if let Some(value) = object.get("cidrs") {
            for (i, item) in list(value, "sampling.trusted_sources.cidrs")?
                .iter()
                .enumerate()
            {
                let path = format!("sampling.trusted_sources.cidrs[{i}]");
                let cidr =
                    Cidr::parse(string(item, &path)?).map_err(|problem| error(path, problem))?;
                self.cidrs.push(cidr);
            }
        }
        if let Some(value) = object.get("principals") {
            for (i, item) in list(value, "sampling.trusted_sources.principals")?
                .iter()
                .enumerate()
            {
                let path = format!("sampling.trusted_sources.principals[{i}]");
                self.principals
                    .push(PrincipalPattern::new(string(item, &path)?));
            }
        }
        Ok(())
    }

    pub fn is_trusted(&self, peer: &mut dyn Peer) -> bool {
        if self.trust_incoming {
            return true;
        }
        if !self.cidrs.is_empty() {
            if let Some(address) = peer.address() {
                if self.cidrs.iter().any(|cidr| cidr.contains(address)) {
                    return true;
                }
            }
        }
        if !self.principals.is_empty() {
            if let Some(principal) = peer.principal() {
                return self
                    .principals
                    .iter()
                    .any(|pattern| pattern.matches(&principal));
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("10.0.0.0/8", "::ffff:10.9.9.9", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
        ];
        for &(cidr, address, want) in cases {
            let cidr = Cidr::parse(cidr).unwrap();
            assert_eq!(
                cidr.contains(address.parse().unwrap()),
                want,
                "{cidr:?} {address}"
            );
        }
    }

    #[test]
    fn cidr_errors() {
        assert!(Cidr::parse("10.0.0.1/8")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/8"));
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("example.com/8")
            .unwrap_err()
            .contains("not an IPv4 or IPv6"));
        assert!(Cidr::parse("fd00::/129").is_err());
    }

    #[test]
    fn peer_addresses() {
        assert_eq!(
            parse_peer_address(b"127.0.0.1:5432"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address(b"[::1]:80"),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            parse_peer_address(b"10.0.0.1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_peer_address(b"\xff"), None);
    }

    struct FixedPeer(Option<&'static str>, Option<&'static str>);

    impl Peer for FixedPeer {
        fn address(&mut self) -> Option<IpAddr> {
            self.0.map(|a| a.parse().unwrap())
        }
        fn principal(&mut self) -> Option<String> {
            self.1.map(String::from)
        }
    }

    #[test]
    fn policy() {
        let policy = TrustPolicy {
            trust_incoming: false,
            cidrs: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            principals: vec![PrincipalPattern::new("spiffe://cluster.local/ns/mesh/*")],
        };
        assert!(policy.is_trusted(&mut FixedPeer(Some("10.0.0.5"), None)));
        assert!(!policy.is_trusted(&mut FixedPeer(Some("203.0.113.5"), None)));
        assert!(policy.is_trusted(&mut FixedPeer(
            None,
            Some("spiffe://cluster.local/ns/mesh/sa/a")
        )));
        assert!(!policy.is_trusted(&mut FixedPeer(
            None,
            Some("spiffe://cluster.local/ns/other/sa/a")
        )));
        assert!(TrustPolicy::trust_everyone().is_trusted(&mut FixedPeer(None, None)));
    }

    /// Problems in `sampling.trusted_sources`, named by their field path.
    #[test]
    fn configuration_errors_name_the_field() {
        crate::config::tests::assert_errors(&[
            (
                r#"{"sampling": {"trusted_sources": {"cidrs": ["10.0.0.1/8"]}}}"#,
                "sampling.trusted_sources.cidrs[0]",
                "did you mean 10.0.0.0/8",
            ),
            (
                r#"{"sampling": {"trusted_sources": {"ips": []}}}"#,
                "sampling.trusted_sources.ips",
                "unknown key",
            ),
        ]);
    }
}
