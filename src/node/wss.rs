//! WSS listening (`[wss]`): the certificate files, the listen addresses, and the public
//! name under which the node advertises a `wss://hostname[:port]/path` endpoint URL
//! beside its multiaddr endpoints, so that an implementation that only speaks the
//! Orbiplex URLs reaches it. Pure functions apart from reading the certificate file.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

/// The default WSS listen address (when `[wss]` is configured).
pub const DEFAULT_WSS_LISTEN: &str = "/ip4/0.0.0.0/tcp/4003/wss";

/// WSS listening.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WssConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where to listen (default `/ip4/0.0.0.0/tcp/4003/wss`).
    #[serde(default)]
    pub listen: Vec<Multiaddr>,
    /// The DNS name of the advertised `wss://` URL. Without it, the first DNS name of
    /// the certificate that is a public-looking host name (not a wildcard, not
    /// `localhost`, with a dot); without either, no URL is advertised.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The port of the advertised URL when it is not the WSS listener's (a reverse
    /// proxy or port forward in front of it; 443 is left out of the URL).
    #[serde(default)]
    pub public_port: Option<u16>,
    /// The path of the advertised URL (default: the path of the WSS listen address,
    /// `/` unless it is `/x-parity-wss/...`). The listener itself accepts any path.
    #[serde(default)]
    pub path: Option<String>,
}

/// Whether `addr` is a WSS listen address (`/wss` or `/tls/ws`).
pub fn is_wss(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Wss(_) | Protocol::Tls))
}

/// The public name of the node's WSS listener: what its `wss://` URL is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WssPublic {
    /// The DNS name (the certificate must be valid for it).
    pub hostname: String,
    /// The port, when it is not the listener's.
    pub public_port: Option<u16>,
    /// The path, when it is not the listener's.
    pub path: Option<String>,
}

impl WssConfig {
    /// Checks `hostname`, `public_port` and `path` (they must make a `wss://` URL that
    /// converts back to the same name and path).
    pub fn check(&self) -> Result<(), String> {
        let path = self.path.as_deref().unwrap_or("/");
        if !path.starts_with('/') {
            return Err(format!("path `{path}` must start with `/`"));
        }
        if let Some(host) = &self.hostname {
            mesh_core::families::wss_url(host, self.public_port.unwrap_or(443), path)
                .map_err(|e| format!("hostname/public_port/path: {e}"))?;
        } else if self.public_port == Some(0) {
            return Err("public_port 0 cannot be advertised".into());
        }
        Ok(())
    }

    /// The public name: `hostname` if set, else one from the certificate (see
    /// [`cert_hostname`]), else `None` (no URL is advertised).
    pub fn public(&self) -> Result<Option<WssPublic>, String> {
        let hostname = match &self.hostname {
            Some(h) => Some(h.clone()),
            None => cert_hostname(&self.cert)?,
        };
        Ok(hostname.map(|hostname| WssPublic {
            hostname,
            public_port: self.public_port,
            path: self.path.clone(),
        }))
    }
}

/// The first DNS name among the subject alternative names of the first certificate in
/// the PEM file at `path` that can be a public host name: not a wildcard, not
/// `localhost`, at least two labels, lower case, valid in a `wss://` URL.
pub fn cert_hostname(path: &Path) -> Result<Option<String>, String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| what(&e))?
        .next()
        .ok_or_else(|| what(&"no PEM certificate in the file"))?
        .map_err(|e| what(&e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| what(&e))?;
    let Some(san) = cert.subject_alternative_name().map_err(|e| what(&e))? else {
        return Ok(None);
    };
    Ok(san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(name) if usable_public_name(name) => {
            Some((*name).to_owned())
        }
        _ => None,
    }))
}

fn usable_public_name(name: &str) -> bool {
    !name.starts_with("*.")
        && !name.eq_ignore_ascii_case("localhost")
        && !name.ends_with(".localhost")
        && name.contains('.')
        && mesh_core::families::wss_url(name, 443, "/").is_ok()
}

/// The `wss://` URL the node advertises for `public`, given its listen addresses: made
/// only when it listens on WSS (not through a relay). The port is `public_port`, else
/// the lowest port of its WSS listeners; the path is `path`, else that listener's.
pub fn wss_url<'a>(
    public: &WssPublic,
    listeners: impl IntoIterator<Item = &'a Multiaddr>,
) -> Option<String> {
    let listener = listeners
        .into_iter()
        .filter(|a| is_wss(a) && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
        .filter_map(|a| {
            let port = a.iter().find_map(|p| match p {
                Protocol::Tcp(port) if port != 0 => Some(port),
                _ => None,
            })?;
            let path = a
                .iter()
                .find_map(|p| match p {
                    Protocol::Ws(path) | Protocol::Wss(path) => Some(path.into_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| "/".to_owned());
            Some((port, path))
        })
        .min();
    let (port, path) = listener?;
    let port = public.public_port.unwrap_or(port);
    let path = public.path.clone().unwrap_or(path);
    match mesh_core::families::wss_url(&public.hostname, port, &path) {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::warn!(error = %e, "no wss:// endpoint URL advertised");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn public(port: Option<u16>, path: Option<&str>) -> WssPublic {
        WssPublic {
            hostname: "node-01.example.org".into(),
            public_port: port,
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn the_url_follows_the_wss_listener() {
        let listen = [
            ma("/ip4/127.0.0.1/tcp/4001"),
            ma("/ip4/127.0.0.1/tcp/4004/tls/ws"),
            ma("/ip4/10.0.0.1/tcp/4003/x-parity-wss/%2Fpeer"),
        ];
        assert_eq!(
            wss_url(&public(None, None), &listen).as_deref(),
            Some("wss://node-01.example.org:4003/peer")
        );
        assert_eq!(
            wss_url(&public(Some(443), Some("/mesh")), &listen).as_deref(),
            Some("wss://node-01.example.org/mesh")
        );
        // No WSS listener (or only a relayed one): no URL.
        let relay = libp2p::PeerId::random();
        let other = [
            ma("/ip4/127.0.0.1/tcp/4002/ws"),
            ma(&format!(
                "/ip4/10.0.0.9/tcp/443/wss/p2p/{relay}/p2p-circuit"
            )),
        ];
        assert_eq!(wss_url(&public(Some(443), None), &other), None);
        // A name that cannot be advertised gives none either.
        let bad = WssPublic {
            hostname: "Not A Name".into(),
            ..public(None, None)
        };
        assert_eq!(wss_url(&bad, &listen), None);
    }

    fn config(hostname: Option<&str>, port: Option<u16>, path: Option<&str>) -> WssConfig {
        WssConfig {
            cert: "/nonexistent".into(),
            key: "/nonexistent".into(),
            listen: Vec::new(),
            hostname: hostname.map(str::to_owned),
            public_port: port,
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn config_checks_the_public_name() {
        assert!(
            config(Some("node.example"), Some(8443), Some("/peer"))
                .check()
                .is_ok()
        );
        assert!(config(None, None, None).check().is_ok());
        assert!(config(Some("node example"), None, None).check().is_err());
        assert!(
            config(Some("node.example"), None, Some("peer"))
                .check()
                .is_err()
        );
        assert!(
            config(Some("node.example"), None, Some("/a b"))
                .check()
                .is_err()
        );
        assert!(config(None, Some(0), None).check().is_err());
        // A configured hostname does not read the certificate.
        assert_eq!(
            config(Some("node.example"), None, None).public().unwrap(),
            Some(WssPublic {
                hostname: "node.example".into(),
                public_port: None,
                path: None
            })
        );
        assert!(config(None, None, None).public().is_err(), "missing file");
    }

    #[test]
    fn the_hostname_can_come_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let write = |names: &[&str]| {
            let key = rcgen::KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let cert = rcgen::CertificateParams::new(names)
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let p = dir.path().join("cert.pem");
            std::fs::write(&p, cert.pem()).unwrap();
            p
        };
        let p = write(&[
            "localhost",
            "*.example.org",
            "127.0.0.1",
            "node-7.example.org",
        ]);
        assert_eq!(
            cert_hostname(&p).unwrap().as_deref(),
            Some("node-7.example.org")
        );
        let p = write(&["localhost", "127.0.0.1"]);
        assert_eq!(cert_hostname(&p).unwrap(), None);
        std::fs::write(&p, "not pem").unwrap();
        assert!(cert_hostname(&p).is_err());
    }
}
