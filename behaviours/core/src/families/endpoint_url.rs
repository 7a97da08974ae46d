//! `wss://` and `ws://` endpoint URLs (the Orbiplex form, `wss://node-01.example.org/peer`)
//! as multiaddrs that rust-libp2p's WebSocket transport dials, and back.
//!
//! `wss://host[:port]/path` becomes `/dns/host/tcp/port/tls/ws` with the path kept in the
//! `ws` component (`/x-parity-ws/<percent-encoded path>` in text when it is not `/`), the
//! same form libp2p-websocket 0.46 builds from a redirect location; an IPv4 or IPv6 host
//! becomes `/ip4/…` or `/ip6/…`. The default ports are those of the schemes (443, 80).
//! The transport takes the TLS server name (SNI) and the name the certificate must be
//! valid for from the `/dns` component, so the name must reach the WebSocket transport
//! unresolved (see the node's transport stack).

use std::borrow::Cow;

use multiaddr::{Multiaddr, Protocol};

/// Longest endpoint URL that is converted, bytes (longer ones are not dialed).
pub const MAX_ENDPOINT_URL: usize = 2048;

/// The multiaddr of a `wss://` or `ws://` URL, or `None` when the URL is not one, has
/// user info or a fragment (RFC 6455 section 3 forbids fragments), a host that is not a
/// DNS name or IP address, port 0, or more than [`MAX_ENDPOINT_URL`] bytes.
pub fn ws_url_multiaddr(text: &str) -> Option<Multiaddr> {
    if text.len() > MAX_ENDPOINT_URL {
        return None;
    }
    let tls = if text.starts_with("wss://") {
        true
    } else if text.starts_with("ws://") {
        false
    } else {
        return None;
    };
    let url = url::Url::parse(text).ok()?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return None;
    }
    let mut addr = Multiaddr::empty();
    match url.host()? {
        url::Host::Domain(name) if is_dns_name(name) => {
            addr.push(Protocol::Dns(Cow::Owned(name.to_owned())));
        }
        url::Host::Domain(_) => return None,
        url::Host::Ipv4(ip) => addr.push(Protocol::Ip4(ip)),
        url::Host::Ipv6(ip) => addr.push(Protocol::Ip6(ip)),
    }
    let port = url.port_or_known_default().filter(|p| *p != 0)?;
    addr.push(Protocol::Tcp(port));
    if tls {
        addr.push(Protocol::Tls);
    }
    let resource = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    addr.push(Protocol::Ws(Cow::Owned(resource)));
    Some(addr)
}

/// The `wss://` URL of `host` (a DNS name), `port` (left out when 443) and `path`
/// (`/` when empty, a leading `/` added), or why it cannot be one.
pub fn wss_url(host: &str, port: u16, path: &str) -> Result<String, String> {
    if !is_dns_name(host) || host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`{host}` is not a lower-case DNS name (letters, digits, `-`, `.`)"
        ));
    }
    if port == 0 {
        return Err("port 0 cannot be advertised".into());
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let text = if port == 443 {
        format!("wss://{host}{path}")
    } else {
        format!("wss://{host}:{port}{path}")
    };
    // What is advertised must convert back to the same name and path, unchanged by URL
    // normalisation (no spaces, fragments or other characters a URL escapes).
    let back = ws_url_multiaddr(&text);
    let same = back.is_some_and(|a| {
        a.iter().any(|p| matches!(p, Protocol::Dns(h) if h == host))
            && a.iter()
                .any(|p| matches!(p, Protocol::Ws(r) if r.as_ref() == path.as_str()))
    });
    if same {
        Ok(text)
    } else {
        Err(format!("`{text}` is not a usable wss:// URL"))
    }
}

/// A DNS name as TLS accepts it for SNI: labels of ASCII letters, digits, `-` and `_`,
/// 1 to 63 bytes each, at most 253 bytes, not all digits (that would be an address).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && !name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn orbiplex_urls_become_websocket_multiaddrs() {
        for (url, addr) in [
            (
                "wss://node-01.docs.orbiplex.ai/peer",
                "/dns/node-01.docs.orbiplex.ai/tcp/443/tls/x-parity-ws/%2Fpeer",
            ),
            ("wss://relay.example", "/dns/relay.example/tcp/443/tls/ws"),
            (
                "wss://Node.Example:8443/a/b%20c",
                "/dns/node.example/tcp/8443/tls/x-parity-ws/%2Fa%2Fb%2520c",
            ),
            ("ws://127.0.0.1:4002", "/ip4/127.0.0.1/tcp/4002/ws"),
            ("ws://[::1]/", "/ip6/::1/tcp/80/ws"),
            (
                "wss://203.0.113.5:4003/peer?v=1",
                "/ip4/203.0.113.5/tcp/4003/tls/x-parity-ws/%2Fpeer%3Fv%3D1",
            ),
        ] {
            assert_eq!(ws_url_multiaddr(url), Some(ma(addr)), "{url}");
        }
        // The path survives the binary form too (what Kademlia and identify carry).
        let a = ws_url_multiaddr("wss://n.example/peer").unwrap();
        assert_eq!(Multiaddr::try_from(a.to_vec()).unwrap(), a);
        assert!(a.iter().any(|p| p == Protocol::Ws("/peer".into())));
    }

    #[test]
    fn urls_that_cannot_be_dialed_give_none() {
        let long = format!("wss://{}.example/", "a".repeat(MAX_ENDPOINT_URL));
        for url in [
            "https://node.example/peer",
            "wss://",
            "wss://user:pw@node.example/",
            "wss://node.example/#frag",
            "wss://node.example:0/",
            "wss://bad_host!.example/",
            "wss://-lead.example/",
            "multiaddr:/ip4/127.0.0.1/tcp/1",
            long.as_str(),
        ] {
            assert_eq!(ws_url_multiaddr(url), None, "{url}");
        }
    }

    #[test]
    fn advertised_urls_round_trip() {
        assert_eq!(
            wss_url("node-01.example.org", 443, "/peer").unwrap(),
            "wss://node-01.example.org/peer"
        );
        assert_eq!(
            wss_url("n.example", 4003, "peer").unwrap(),
            "wss://n.example:4003/peer"
        );
        assert_eq!(
            wss_url("n.example", 8443, "").unwrap(),
            "wss://n.example:8443/"
        );
        assert!(wss_url("N.example", 443, "/").is_err());
        assert!(wss_url("127.0.0.1", 443, "/").is_err());
        assert!(wss_url("a b", 443, "/").is_err());
        assert!(wss_url("n.example", 0, "/").is_err());
        assert!(wss_url("n.example", 443, "/x#y").is_err());
        assert!(wss_url("n.example", 443, "/a b").is_err());
    }
}
