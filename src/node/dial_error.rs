//! Dial failures as text a user can act on: why a WSS dial failed TLS (a certificate not
//! valid for the name dialed, a chain that ends at no trusted root, an expired
//! certificate) in front of libp2p's own chain of errors, which buries it.

use std::error::Error;

use libp2p::swarm::DialError;
use rustls::CertificateError;

/// The text of a failed dial: the TLS reasons found first (one per failed address), then
/// libp2p's message.
pub(crate) fn describe(error: &DialError) -> String {
    let text = error.to_string();
    let DialError::Transport(attempts) = error else {
        return text;
    };
    let reasons: Vec<String> = attempts
        .iter()
        .filter_map(|(addr, e)| tls_reason(e).map(|r| format!("{addr}: {r}")))
        .collect();
    if reasons.is_empty() {
        text
    } else {
        format!("{}; {text}", reasons.join("; "))
    }
}

/// Why TLS refused the peer's certificate, if that is somewhere in `error`'s chain.
pub(crate) fn tls_reason(error: &(dyn Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    // Bounded: error chains are short; the bound only guards against a cycle.
    for _ in 0..32 {
        let e = next?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(explain(tls));
        }
        // `io::Error::source` skips the error it wraps; look at that one first.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn Error + 'static)),
                None => io.source(),
            },
            None => e.source(),
        };
    }
    None
}

fn explain(error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(cert) = error else {
        return format!("TLS handshake failed: {error}");
    };
    match cert {
        CertificateError::NotValidForName => {
            "TLS: the server certificate is not valid for the name dialed (wrong name)".into()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "TLS: the server certificate is not valid for the name dialed (wrong name): \
             dialed {}, the certificate names {}",
            expected.to_str(),
            if presented.is_empty() {
                "nothing".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        CertificateError::UnknownIssuer => "TLS: the server certificate chain ends at no \
             trusted root (untrusted root: neither the web PKI nor a configured tls_roots / \
             --tls-root file issued it)"
            .into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("TLS: the server certificate has expired ({error})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("TLS: the server certificate is not valid yet ({error})")
        }
        _ => format!("TLS: the server certificate was refused ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error that wraps another, as libp2p's transport errors do.
    #[derive(Debug)]
    struct Wrap(Box<dyn Error + Send + Sync>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn buried(e: rustls::Error) -> io::Error {
        // What futures-rustls and the boxed transport make of it.
        io::Error::other(Wrap(Box::new(io::Error::new(
            io::ErrorKind::InvalidData,
            e,
        ))))
    }

    #[test]
    fn wrong_name_and_untrusted_root_are_named() {
        let name = rustls_pki_types::ServerName::try_from("node.example")
            .unwrap()
            .to_owned();
        let wrong = buried(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: name,
                presented: vec!["DnsName(\"other.example\")".into()],
            },
        ));
        let r = tls_reason(&wrong).unwrap();
        assert!(
            r.contains("wrong name") && r.contains("node.example"),
            "{r}"
        );
        assert!(r.contains("other.example"), "{r}");
        let root = buried(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(tls_reason(&root).unwrap().contains("untrusted root"));
        let plain = io::Error::other(Wrap(Box::new(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(tls_reason(&plain), None);
    }

    #[test]
    fn dial_errors_lead_with_the_tls_reason() {
        let addr: libp2p::Multiaddr = "/dns/node.example/tcp/443/tls/ws".parse().unwrap();
        let e = DialError::Transport(vec![(
            addr,
            libp2p::TransportError::Other(buried(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))),
        )]);
        let text = describe(&e);
        assert!(
            text.starts_with("/dns/node.example/tcp/443/tls/ws: TLS: the server certificate chain"),
            "{text}"
        );
        assert!(
            text.contains("Failed to negotiate transport protocol(s)"),
            "{text}"
        );
        assert_eq!(
            describe(&DialError::Aborted),
            DialError::Aborted.to_string()
        );
    }
}
