//! Which `Host` the seed directory answers: a DNS-rebinding guard. (The web page's and
//! the metrics' servers, bound beyond loopback, apply it too, with no names: on
//! loopback they have a stricter rule of their own, `control_auth::LoopbackHost`.)
//!
//! A web page whose own DNS name was rebound to 127.0.0.1 could otherwise read a
//! directory reachable on loopback and write adverts through it (signed by keys of the
//! page's choosing) under the share of the loopback address, the one the node's own
//! clients use. Such a request carries the page's name in `Host`. So a request from a
//! loopback client (whatever address the directory is bound to: `127.0.0.1`, or
//! `0.0.0.0`, which loopback reaches too), every request to a directory bound to
//! loopback, and every request to a directory given names to answer to, is answered
//! only when its `Host` is:
//!
//! - an IP address (with or without a port): no page can have it as its name;
//! - `localhost` (with or without a port): only the local machine's pages have it;
//! - one of the names configured (`directory_hosts`, `--directory-host`; `meshd
//!   directory --host`), with any port or none, for a reverse proxy that passes the
//!   public name on (nginx's default passes the upstream address, which is an IP;
//!   Caddy and Traefik pass the public name: name it).
//!
//! Anything else (or no `Host`) is `403` with `E_TRANSPORT_REJECTED`. A client on this
//! host that reached one of its other addresses (a LAN or public one: the kernel sends
//! from the address dialed) is checked as a loopback one: a page rebound to the host's
//! LAN address reached a wildcard-bound server from a browser on the host itself, and
//! read it. Other clients of a directory bound beyond loopback with no names
//! configured may send any `Host`: it is meant to be reached by names the node does
//! not know. Pure: the headers and the
//! client's address in, the verdict out.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::control_auth::Refusal;

/// The rule of one directory server.
#[derive(Debug, Clone)]
pub struct DirectoryHosts {
    /// The names configured, lowercase.
    names: Vec<String>,
    /// Whether the server is bound to a loopback address.
    loopback: bool,
}

impl DirectoryHosts {
    /// The rule for a directory served on `served` with `names` configured.
    pub fn new(served: SocketAddr, names: &[String]) -> Self {
        DirectoryHosts {
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
            loopback: served.ip().is_loopback(),
        }
    }

    /// Whether a request from `client` with these headers may be answered;
    /// `on_this_host`: the client is on this host (`http_serve::OnThisHost`: it came
    /// from the address it reached, one of the host's own).
    pub fn check(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
        on_this_host: bool,
    ) -> Result<(), Refusal> {
        let checked = self.loopback
            || !self.names.is_empty()
            || on_this_host
            || client.is_none_or(crate::http_serve::is_loopback);
        if !checked {
            return Ok(());
        }
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
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let on_host = req
        .extensions()
        .get::<crate::http_serve::OnThisHost>()
        .is_some_and(|h| h.0);
    match rule.check(req.headers(), client, on_host) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(detail = %refusal.error, "directory request refused");
            refusal.into_response()
        }
    }
}

/// `app` with the rule of a directory served on `served` answering `names`.
pub fn guard(app: axum::Router, served: SocketAddr, names: &[String]) -> axum::Router {
    let rule = DirectoryHosts::new(served, names);
    app.layer(axum::middleware::from_fn_with_state(rule, require))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rule: &DirectoryHosts, host: Option<&str>) -> bool {
        allows_from(rule, host, "127.0.0.1")
    }

    /// Whether `rule` answers a request from `client` (on this host when it is
    /// 192.0.2.1) with `Host: host`.
    fn allows_from(rule: &DirectoryHosts, host: Option<&str>, client: &str) -> bool {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        let on_host = client == "192.0.2.1";
        rule.check(&h, Some(client.parse().unwrap()), on_host)
            .is_ok()
    }

    #[test]
    fn on_loopback_addresses_and_localhost_pass_names_do_not() {
        let rule = DirectoryHosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
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
        let rule = DirectoryHosts::new("127.0.0.1:8080".parse().unwrap(), &names);
        assert!(allows(&rule, Some("seeds.example.org")));
        assert!(allows(&rule, Some("seeds.example.org:443")));
        assert!(allows(&rule, Some("alt.example:8443")));
        assert!(!allows(&rule, Some("alt.example:443")));
        assert!(!allows(&rule, Some("other.example.org")));
    }

    #[test]
    fn bound_beyond_loopback_the_rule_applies_to_loopback_clients_or_with_names() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let rule = DirectoryHosts::new(any, &[]);
        // A page rebound to 127.0.0.1 reaches a wildcard-bound directory over loopback.
        assert!(!allows_from(&rule, Some("rebound.example"), "127.0.0.1"));
        assert!(!allows_from(
            &rule,
            Some("rebound.example"),
            "::ffff:127.0.0.1"
        ));
        assert!(allows_from(&rule, Some("127.0.0.1:8080"), "127.0.0.1"));
        // One rebound to the host's own LAN address, from a browser on the host (the
        // client "192.0.2.1" is on this host in `allows_from`), likewise.
        assert!(!allows_from(&rule, Some("rebound.example"), "192.0.2.1"));
        assert!(allows_from(&rule, Some("192.0.2.1:8080"), "192.0.2.1"));
        // Clients elsewhere reach it by names the node does not know.
        assert!(allows_from(&rule, Some("seeds.example.org"), "203.0.113.5"));
        let rule = DirectoryHosts::new(any, &["seeds.example.org".into()]);
        assert!(allows_from(&rule, Some("seeds.example.org"), "203.0.113.5"));
        assert!(allows_from(&rule, Some("192.0.2.7:8080"), "203.0.113.5"));
        assert!(!allows_from(&rule, Some("rebound.example"), "203.0.113.5"));
    }
}
