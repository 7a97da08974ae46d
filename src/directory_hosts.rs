//! Which `Host` the seed directory answers: a DNS-rebinding guard.
//!
//! A web page whose own DNS name was rebound to 127.0.0.1 could otherwise read a
//! directory served on loopback and write adverts through it (signed by keys of the
//! page's choosing) under the share of the loopback address, the one the node's own
//! clients use. Such a request carries the page's name in `Host`. So a directory on a
//! loopback address, or one given names to answer to, answers only a `Host` that is:
//!
//! - an IP address (with or without a port): no page can have it as its name;
//! - `localhost` (with or without a port): only the local machine's pages have it;
//! - one of the names configured (`directory_hosts`, `--directory-host`; `meshd
//!   directory --host`), with any port or none, for a reverse proxy that passes the
//!   public name on (nginx's default passes the upstream address, which is an IP).
//!
//! Anything else (or no `Host`) is `403` with `E_TRANSPORT_REJECTED`. A directory on
//! another address with no names configured answers every `Host`: it is meant to be
//! reached by names the node does not know. Pure: the headers in, the verdict out.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::control_auth::Refusal;

/// The rule of one directory server.
#[derive(Debug, Clone)]
pub struct DirectoryHosts {
    /// The names configured, lowercase.
    names: Vec<String>,
}

impl DirectoryHosts {
    /// The rule for a directory served on `served` with `names` configured; `None`
    /// when no rule applies (not loopback, no names).
    pub fn new(served: SocketAddr, names: &[String]) -> Option<Self> {
        if !served.ip().is_loopback() && names.is_empty() {
            return None;
        }
        Some(DirectoryHosts {
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        })
    }

    /// Whether a request with these headers may be answered.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match host {
            Some(h) if self.allows(h) => Ok(()),
            _ => Err(Refusal::forbidden(format!(
                "Host {:?} is not an address, localhost or a name the seed directory is \
                 configured to answer (directory_hosts)",
                host.unwrap_or("")
            ))),
        }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = name_of(&host);
        name.is_some_and(|n| {
            n == "localhost"
                || n.parse::<IpAddr>().is_ok()
                || self.names.iter().any(|c| c == n || *c == host)
        })
    }
}

/// The name part of a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`): `None`
/// when the port is not a number.
fn name_of(host: &str) -> Option<&str> {
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return match after {
            "" => Some(ip),
            p => p
                .strip_prefix(':')
                .filter(|p| p.parse::<u16>().is_ok())
                .map(|_| ip),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() && !name.contains(':') => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

/// The middleware that applies [`DirectoryHosts::check`]
/// (`axum::middleware::from_fn_with_state`).
pub async fn require(State(rule): State<DirectoryHosts>, req: Request, next: Next) -> Response {
    match rule.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(detail = %refusal.error, "directory request refused");
            refusal.into_response()
        }
    }
}

/// `app` with the rule when one applies to a directory served on `served`.
pub fn guard(app: axum::Router, served: SocketAddr, names: &[String]) -> axum::Router {
    match DirectoryHosts::new(served, names) {
        Some(rule) => app.layer(axum::middleware::from_fn_with_state(rule, require)),
        None => app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &DirectoryHosts, host: Option<&str>) -> bool {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        rule.check(&h).is_ok()
    }

    #[test]
    fn on_loopback_addresses_and_localhost_pass_names_do_not() {
        let rule = DirectoryHosts::new("127.0.0.1:8080".parse().unwrap(), &[]).unwrap();
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "203.0.113.9:443",
        ] {
            assert!(allows(&rule, Some(ok)), "{ok}");
        }
        for refused in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8080",
            "127.0.0.1:99999",
            "[::1]x",
            "",
        ] {
            assert!(!allows(&rule, Some(refused)), "{refused}");
        }
        assert!(!allows(&rule, None), "no Host");
    }

    #[test]
    fn configured_names_pass_with_any_port_or_the_one_given() {
        let names = vec![
            "Seeds.Example.org".to_owned(),
            "alt.example:8443".to_owned(),
        ];
        let rule = DirectoryHosts::new("127.0.0.1:8080".parse().unwrap(), &names).unwrap();
        assert!(allows(&rule, Some("seeds.example.org")));
        assert!(allows(&rule, Some("seeds.example.org:443")));
        assert!(allows(&rule, Some("alt.example:8443")));
        assert!(!allows(&rule, Some("alt.example:443")));
        assert!(!allows(&rule, Some("other.example.org")));
    }

    #[test]
    fn elsewhere_the_rule_applies_only_when_names_are_given() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(DirectoryHosts::new(public, &[]).is_none());
        let rule = DirectoryHosts::new(public, &["seeds.example.org".into()]).unwrap();
        assert!(allows(&rule, Some("seeds.example.org")));
        assert!(allows(&rule, Some("192.0.2.7:8080")));
        assert!(!allows(&rule, Some("rebound.example")));
    }
}
