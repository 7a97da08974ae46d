//! Where the CLI finds a running node's control API, and the token it sends there.

use libmesh::control::control_file;
use libmesh::control_auth::read_token;

use super::Ctx;
use super::node::ClientArgs;

/// The control token of the node whose data directory is the client's (none when the
/// file is missing: the node then answers 401 with `E_TRANSPORT_REJECTED`).
pub(super) fn control_token(ctx: &Ctx) -> Option<String> {
    read_token(&ctx.data_dir).ok().filter(|t| !t.is_empty())
}

pub(super) fn control_url(ctx: &Ctx, args: &ClientArgs) -> anyhow::Result<String> {
    if let Some(u) = &args.node {
        return on_loopback(u.trim_end_matches('/'));
    }
    let path = control_file(&ctx.data_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "no running node for {} ({}: {e}); start `meshd run` or pass --control",
            ctx.data_dir.display(),
            path.display()
        )
    })?;
    on_loopback(text.trim().trim_end_matches('/'))
}

/// `url` when it names a loopback address: the control API only listens there, and
/// every call carries the token (and what the command sends), so a URL elsewhere (a
/// typo, a `control.addr` edited by someone else) would hand them to another host in
/// clear text. Not `localhost`: it resolves to `::1` first on many systems, where
/// another local user may listen on the port the node holds on 127.0.0.1 (or the other
/// way round), and the first address that answers got the token.
fn on_loopback(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("control URL {url}: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    if host.eq_ignore_ascii_case("localhost") {
        anyhow::bail!(
            "control URL {url}: name the address the control API listens on \
             (http://127.0.0.1:PORT or http://[::1]:PORT, as in control.addr), not \
             localhost, which may reach another user's listener on the other address"
        );
    }
    let loopback = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() != "http" || !loopback {
        anyhow::bail!(
            "control URL {url}: the control API is served over http on loopback only \
             (127.0.0.0/8, ::1); the token is not sent elsewhere"
        );
    }
    Ok(url.to_owned())
}
