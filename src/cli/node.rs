//! `meshd run` (the node) and the commands that talk to a running node through its
//! control API: `status`, `peers`, `lookup`, `dial`, `marker send`, `gossip`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hyper::Method;
use libmesh::control::{control_file, control_limits, control_router, metrics_router};

use super::control_url::{control_token, control_url};
use libmesh::control_auth::{ControlAuth, generate_token, token_file, write_private};
use libmesh::directory::{DirectoryConfig, router as directory_router};
use libmesh::node::config::{Bootstrap, BootstrapName, KadMode, WssConfig};
use libmesh::node::{Node, NodeConfig, NodeEvent, SeedPeer};
use libmesh::{http_client, http_serve};
use mesh_core::{IdentityStore, MeshError, NodeId, Timestamp};
use serde_json::{Value, json};

use super::{Ctx, print_json};

/// `meshd run` flags; each overrides the same key of the `--config` file.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// TOML configuration file (see the README's configuration reference).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (repeatable). Default: QUIC and TCP on 4001, WS on 4002, all
    /// interfaces.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<libp2p::Multiaddr>,
    /// An address known to be reachable from outside (repeatable).
    #[arg(long = "external", value_name = "MULTIADDR")]
    external: Vec<libp2p::Multiaddr>,
    /// A static seed peer, `[LABEL=]NODE_ID@MULTIADDR` (repeatable).
    #[arg(long = "seed", value_name = "[LABEL=]NODE_ID@MULTIADDR")]
    seeds: Vec<String>,
    /// `public` (the libp2p bootstrap nodes), `none`, or bootstrap multiaddrs.
    #[arg(long, value_name = "public|none|MULTIADDR", num_args = 1..)]
    bootstrap: Vec<String>,
    /// Kademlia mode: auto (follow AutoNAT), server or client.
    #[arg(long, value_name = "auto|server|client")]
    kad_mode: Option<String>,
    /// Keep loopback and private addresses of peers in the Amino routing table (config
    /// `amino_private_addrs`; by default only public addresses enter it).
    #[arg(long)]
    amino_private_addrs: bool,
    /// Run a circuit relay v2 server (with relay admission).
    #[arg(long)]
    relay_server: bool,
    /// The relay server's admission policy: open, advert, allowlist:ID,...,
    /// federation:FED,... (needs `[admission] endorsers` in the config file); `a+b`
    /// needs both, `a|b` either (default advert).
    #[arg(long, value_name = "POLICY")]
    admission: Option<String>,
    /// Hold a reservation on this relay, `MULTIADDR/p2p/<relay peer id>` (repeatable).
    #[arg(long = "relay", value_name = "MULTIADDR")]
    relays: Vec<libp2p::Multiaddr>,
    /// Reservations held at once, on the best-scoring relays (config `max_relays`,
    /// default 2).
    #[arg(long, value_name = "N")]
    max_relays: Option<usize>,
    /// Do not forward signaling frames for others (no `core/signaling`).
    #[arg(long)]
    no_signaling_host: bool,
    /// Do not run AutoNAT v2 (client and server).
    #[arg(long)]
    no_autonat: bool,
    /// Lifetime of this node's swarm presences, seconds, in swarms of up to 50 members
    /// (longer in larger ones; re-announced before half).
    #[arg(long, value_name = "SECS")]
    swarm_ttl: Option<i64>,
    /// Stage timeouts of the routing policy, seconds: DIRECT,SIGNALING,RELAY.
    #[arg(long, value_name = "D,S,R")]
    route_timeouts: Option<String>,
    /// Serve the seed directory (HTTP) on this address.
    #[arg(long, value_name = "ADDR")]
    directory: Option<SocketAddr>,
    /// A name the seed directory answers in `Host` (repeatable; added to
    /// `directory_hosts`), e.g. a reverse proxy's public name.
    #[arg(long = "directory-host", value_name = "NAME")]
    directory_hosts: Vec<String>,
    /// Serve Prometheus metrics and /status on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The control API address (loopback; default 127.0.0.1:0).
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// WSS certificate chain (PEM); needs --wss-key.
    #[arg(long, value_name = "FILE", requires = "wss_key")]
    wss_cert: Option<PathBuf>,
    /// WSS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "wss_cert")]
    wss_key: Option<PathBuf>,
    /// The DNS name of the advertised wss:// URL (`[wss] hostname`; default: a name from
    /// the certificate). Needs a WSS certificate.
    #[arg(long, value_name = "NAME")]
    wss_hostname: Option<String>,
    /// The port of the advertised wss:// URL (`[wss] public_port`; default: the WSS
    /// listener's).
    #[arg(long, value_name = "PORT")]
    wss_public_port: Option<u16>,
    /// The path of the advertised wss:// URL (`[wss] path`; default: the listener's, `/`).
    #[arg(long, value_name = "PATH")]
    wss_path: Option<String>,
    /// An extra PEM root trusted when dialing WSS (repeatable).
    #[arg(long = "tls-root", value_name = "FILE")]
    tls_roots: Vec<PathBuf>,
    /// Serve the libp2p perf protocol (`/perf/1.0.0`).
    #[arg(long)]
    perf: bool,
    /// Serve the browser node (the page, its bundle and `/api/info`) over HTTP on
    /// this address.
    #[arg(long, value_name = "ADDR")]
    web: Option<SocketAddr>,
    /// Where the built page is (`web/build.mjs` writes `web/dist`).
    #[arg(long, value_name = "DIR", default_value = "web/dist", requires = "web")]
    web_root: PathBuf,
    /// Print every node event as a JSON line on stdout.
    #[arg(long)]
    events: bool,
}

fn parse_seed(s: &str) -> anyhow::Result<SeedPeer> {
    let (label, rest) = match s.split_once('=') {
        Some((l, r)) if !l.starts_with('/') => (Some(l.to_owned()), r),
        _ => (None, s),
    };
    let (node, addr) = rest
        .split_once('@')
        .with_context(|| format!("seed {s}: expected [LABEL=]NODE_ID@MULTIADDR"))?;
    Ok(SeedPeer {
        node_id: NodeId::parse(node).map_err(|e| anyhow::anyhow!("seed {s}: node id: {e}"))?,
        addr: addr
            .parse()
            .map_err(|e| anyhow::anyhow!("seed {s}: multiaddr: {e}"))?,
        label,
    })
}

fn config_from(ctx: &Ctx, args: &RunArgs) -> anyhow::Result<NodeConfig> {
    let mut c = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if !args.listen.is_empty() {
        c.listen = args.listen.clone();
    }
    c.external.extend(args.external.iter().cloned());
    for s in &args.seeds {
        c.seeds.push(parse_seed(s)?);
    }
    match args.bootstrap.as_slice() {
        [] => {}
        [one] if one == "public" => c.bootstrap = Bootstrap::Named(BootstrapName::Public),
        [one] if one == "none" => c.bootstrap = Bootstrap::Named(BootstrapName::None),
        many => {
            let addrs = many
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|e| anyhow::anyhow!("--bootstrap {a}: {e} (or public|none)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            c.bootstrap = Bootstrap::Addrs(addrs);
        }
    }
    if let Some(m) = &args.kad_mode {
        c.kad_mode = match m.as_str() {
            "auto" => KadMode::Auto,
            "server" => KadMode::Server,
            "client" => KadMode::Client,
            other => anyhow::bail!("--kad-mode {other}: expected auto, server or client"),
        };
    }
    c.relay_server |= args.relay_server;
    c.amino_private_addrs |= args.amino_private_addrs;
    if let Some(n) = args.max_relays {
        c.max_relays = n;
    }
    if let Some(p) = &args.admission {
        c.admission.policy = p.clone();
    }
    c.relays.extend(args.relays.iter().cloned());
    if args.no_signaling_host {
        c.signaling_host = false;
    }
    if args.no_autonat {
        c.autonat = false;
    }
    if let Some(t) = args.swarm_ttl {
        c.swarm.ttl_secs = t;
    }
    if let Some(t) = &args.route_timeouts {
        let v: Vec<u64> = t
            .split(',')
            .map(|x| x.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("--route-timeouts {t}: {e} (expected D,S,R)"))?;
        let [d, s, r] = v[..] else {
            anyhow::bail!("--route-timeouts {t}: expected three numbers D,S,R");
        };
        c.route.direct_secs = d;
        c.route.signaling_secs = s;
        c.route.relay_secs = r;
    }
    c.perf |= args.perf;
    if args.directory.is_some() {
        c.directory = args.directory;
    }
    c.directory_hosts
        .extend(args.directory_hosts.iter().cloned());
    if args.metrics.is_some() {
        c.metrics = args.metrics;
    }
    if let Some(control) = args.control {
        c.control = control;
    }
    if let (Some(cert), Some(key)) = (&args.wss_cert, &args.wss_key) {
        c.wss = Some(WssConfig {
            cert: cert.clone(),
            key: key.clone(),
            listen: Vec::new(),
            hostname: None,
            public_port: None,
            path: None,
        });
    }
    if args.wss_hostname.is_some() || args.wss_public_port.is_some() || args.wss_path.is_some() {
        let wss = c.wss.as_mut().context(
            "--wss-hostname, --wss-public-port and --wss-path need a WSS certificate \
             (--wss-cert and --wss-key, or [wss] in the config file)",
        )?;
        if args.wss_hostname.is_some() {
            wss.hostname.clone_from(&args.wss_hostname);
        }
        if args.wss_public_port.is_some() {
            wss.public_port = args.wss_public_port;
        }
        if args.wss_path.is_some() {
            wss.path.clone_from(&args.wss_path);
        }
    }
    c.tls_roots.extend(args.tls_roots.iter().cloned());
    if ctx.trace_spec.is_some() {
        c.trace = ctx.trace_spec.clone();
    }
    c.check()?;
    Ok(c)
}

/// `meshd run`.
pub(crate) fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = config_from(ctx, &args)?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| ctx.data_dir.clone());
    super::private_dir::ensure_private(&data_dir, true)?;
    let identity = IdentityStore::new(&data_dir).load_or_generate(&Timestamp::now())?;
    super::identity::trace_loaded(ctx, &identity);
    // `--trace` was opened already; a `trace` key in the config file is opened here.
    let trace = match (&ctx.trace_spec, &config.trace) {
        (None, Some(spec)) => super::open_trace(Some(spec.as_str()), ctx.trace_max_bytes)?,
        _ => ctx.trace.clone(),
    };
    let rt = super::advert::runtime()?;
    let web = match args.web {
        Some(addr) => {
            libmesh::web::check_root(&args.web_root).map_err(anyhow::Error::msg)?;
            Some((addr, args.web_root.clone()))
        }
        None => None,
    };
    rt.block_on(serve(
        trace,
        config,
        &data_dir,
        identity.keypair,
        args.events,
        web,
    ))
}

/// `app` with the loopback `Host` rule when it is served on a loopback address
/// (`libmesh::control_auth::LoopbackHost`): a web page rebound to 127.0.0.1 reads
/// nothing. On another address the server is meant to be reached by other names, but
/// loopback clients (a wildcard bind is reached over loopback too) still need an
/// address or `localhost` in `Host` (`libmesh::directory_hosts`).
fn loopback_host(app: axum::Router, served: SocketAddr, what: &'static str) -> axum::Router {
    if !served.ip().is_loopback() {
        return libmesh::directory_hosts::guard(app, served, &[]);
    }
    let rule = libmesh::control_auth::LoopbackHost::new(served, what);
    app.layer(axum::middleware::from_fn_with_state(
        rule,
        libmesh::control_auth::require_host,
    ))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve {what} on {addr}: {e}"))
}

async fn serve(
    trace: Arc<dyn mesh_core::TraceSink>,
    config: NodeConfig,
    data_dir: &Path,
    key: mesh_core::NodeKeypair,
    mut print_events: bool,
    web: Option<(SocketAddr, PathBuf)>,
) -> anyhow::Result<ExitCode> {
    let (mut node, handle, mut events) = Node::new(key, config.clone(), data_dir, trace)?;
    node.listen()?;
    let (node_id, peer_id) = (node.node_id(), node.peer_id());
    let registry = node.registry();
    let store = node.store();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Registered before the ready line: a stop signal that follows it is never lost.
    let stop_signal = super::signals::stop_signal()?;
    tokio::pin!(stop_signal);

    let control = bind(config.control, "the control API").await?;
    let control_addr = control.local_addr()?;
    // The token first, then the address: a client that finds the address finds the
    // token. Both 0600, both removed when this function returns.
    let token = generate_token();
    let mut files = RunFiles(Vec::new());
    let token_path = token_file(data_dir);
    files.write(&token_path, &format!("{token}\n"))?;
    let control_app = control_router(
        handle.clone(),
        ControlAuth::new(token.clone(), control_addr),
    );
    let mut servers = Vec::new();
    servers.push(tokio::spawn(http_serve::serve(
        control,
        control_app,
        control_limits(&config.http),
        stopped(),
    )));
    files.write(&control_file(data_dir), &format!("http://{control_addr}\n"))?;

    let mut ready = json!({
        "node/id": node_id.to_string(),
        "libp2p/peer-id": peer_id.to_string(),
        "control": format!("http://{control_addr}"),
        "data-dir": data_dir.display().to_string(),
    });
    #[cfg(unix)]
    {
        let path = libmesh::control_socket::socket_file(data_dir);
        match libmesh::control_socket::bind(&path) {
            Ok(socket) => {
                files.0.push(path.clone());
                ready["control-socket"] = path.display().to_string().into();
                let app = control_router(handle.clone(), ControlAuth::for_socket(token.clone()));
                servers.push(tokio::spawn(http_serve::serve(
                    socket,
                    app,
                    control_limits(&config.http),
                    stopped(),
                )));
            }
            Err(e) => tracing::warn!(
                path = %path.display(), error = %e,
                "control socket not served: the CLI uses the control API on TCP"
            ),
        }
    }
    if let Some(addr) = config.metrics {
        let l = bind(addr, "metrics").await?;
        ready["metrics"] = format!("http://{}", l.local_addr()?).into();
        let app = loopback_host(
            metrics_router(handle.clone(), registry),
            l.local_addr()?,
            "the metrics server",
        );
        servers.push(tokio::spawn(http_serve::serve(
            l,
            app,
            config.http.limits(),
            stopped(),
        )));
    }
    if let Some((addr, root)) = web {
        let l = bind(addr, "the web page").await?;
        ready["web"] = format!("http://{}", l.local_addr()?).into();
        let app = loopback_host(
            libmesh::web::web_router(handle.clone(), root),
            l.local_addr()?,
            "the web page's server",
        );
        servers.push(tokio::spawn(http_serve::serve(
            l,
            app,
            config.http.limits(),
            stopped(),
        )));
    }
    if let Some(addr) = config.directory {
        let l = bind(addr, "the seed directory").await?;
        ready["directory"] = format!("http://{}", l.local_addr()?).into();
        let directory = DirectoryConfig {
            http: config.http.limits(),
            ..DirectoryConfig::default()
        };
        let app = directory_router(
            store.as_directory_store(),
            directory,
            Arc::new(Timestamp::now),
        );
        let app = libmesh::directory_hosts::guard(app, l.local_addr()?, &config.directory_hosts);
        servers.push(tokio::spawn(http_serve::serve(
            l,
            app,
            directory.http,
            stopped(),
        )));
    }

    let node_task = tokio::spawn(node.run());

    // The ready line waits (briefly) for the listen addresses.
    let mut listen = Vec::new();
    let expected = config.listen_addrs()?.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while listen.len() < expected {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(NodeEvent::Listening { addr })) => listen.push(addr.to_string()),
            Ok(Some(other)) => {
                if print_events && super::print_line(&other.to_json().to_string()).is_err() {
                    // Nobody reads stdout any more: the node runs on, silently.
                    print_events = false;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    ready["listen"] = json!(listen);
    if super::print_line(&ready.to_string()).is_err() {
        print_events = false;
    }

    loop {
        tokio::select! {
            signal = &mut stop_signal => {
                tracing::info!(signal, "stop signal");
                break;
            }
            event = events.recv() => match event {
                Some(e) => {
                    if print_events && super::print_line(&e.to_json().to_string()).is_err() {
                        print_events = false;
                    }
                }
                None => break,
            },
        }
    }
    tracing::info!("shutting down");
    handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), node_task).await;
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
    }
    drop(files);
    Ok(ExitCode::SUCCESS)
}

/// The files a running node publishes in its data directory (`control.token`,
/// `control.addr`): written owner-only, removed when dropped (a clean stop, or a start
/// that fails after writing them).
struct RunFiles(Vec<PathBuf>);

impl RunFiles {
    fn write(&mut self, path: &Path, text: &str) -> anyhow::Result<()> {
        write_private(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        self.0.push(path.to_owned());
        Ok(())
    }
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Commands that talk to a running node.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The running node's control API, e.g. http://127.0.0.1:7000 (default: the
    /// socket `<data-dir>/control.sock`, else the address in `<data-dir>/control.addr`;
    /// `meshd run` serves both). The token is always read from
    /// `<data-dir>/control.token`.
    #[arg(long = "node", value_name = "URL")]
    pub(super) node: Option<String>,
}

/// `meshd marker …`.
#[derive(Debug, Subcommand)]
pub(crate) enum MarkerCommand {
    /// Send a signed signal-marker envelope (`marker/ref` = TEXT) to TARGET, or with
    /// `--swarm KEY TEXT` to every member of a swarm the node is in.
    Send {
        /// TARGET (node id, peer id or multiaddr) and TEXT (the marker reference); with
        /// --swarm, TEXT alone.
        #[arg(required = true, num_args = 1..=2, value_names = ["TARGET", "TEXT"])]
        args: Vec<String>,
        /// Send to the discovery-key swarm KEY (64 hex digits, or a name that is hashed
        /// into a key) on its gossipsub topic instead of one target.
        #[arg(long, value_name = "KEY")]
        swarm: Option<String>,
    },
}

impl MarkerCommand {
    /// The control call of `marker send`: its path and body (`E_PROTO_INVALID` when
    /// the arguments do not fit: TARGET TEXT, or TEXT with --swarm).
    pub(crate) fn request(self) -> Result<(&'static str, serde_json::Value), MeshError> {
        let MarkerCommand::Send { mut args, swarm } = self;
        match (swarm, args.len()) {
            (Some(key), 1) => Ok((
                "/swarm/marker",
                serde_json::json!({"key": key, "text": args.remove(0)}),
            )),
            (None, 2) => {
                let text = args.remove(1);
                Ok((
                    "/marker",
                    serde_json::json!({"target": args.remove(0), "text": text}),
                ))
            }
            (Some(_), _) => Err(MeshError::invalid(
                "marker send --swarm KEY takes TEXT alone",
            )),
            (None, _) => Err(MeshError::invalid("marker send takes TARGET TEXT")),
        }
    }
}

/// `meshd gossip …`.
#[derive(Debug, Subcommand)]
pub(crate) enum GossipCommand {
    /// Subscribe the node to TOPIC.
    Subscribe {
        /// The topic.
        topic: String,
    },
    /// Publish TEXT on TOPIC.
    Publish {
        /// The topic.
        topic: String,
        /// The message.
        text: String,
    },
}

/// Calls the control API and prints the answer; coded failures exit 1.
pub(crate) fn call(
    ctx: &Ctx,
    args: &ClientArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    print_json(&call_value(ctx, args, method, path, body)?);
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is a Unix domain socket (not a file put in its place).
#[cfg(unix)]
fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// As [`call`], giving back the answer instead of printing it.
pub(crate) fn call_value(
    ctx: &Ctx,
    args: &ClientArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = control_token(ctx);
    let rt = super::advert::runtime()?;
    let body = body.map(|b| b.to_string().into_bytes());
    let mut passed_over: Option<String> = None;
    let (url, resp) = rt.block_on(async {
        // The socket first (no other local user can crowd it out), unless `--node` names
        // the API; a socket nobody listens on (a node that crashed) is passed over, and
        // said so if TCP fails too.
        #[cfg(unix)]
        if args.node.is_none() {
            let socket = libmesh::control_socket::socket_file(&ctx.data_dir);
            if socket.exists() {
                let url = format!("unix:{}{path}", socket.display());
                let sent = http_client::send_unix(
                    &socket,
                    method.clone(),
                    path,
                    body.clone(),
                    token.as_deref(),
                );
                match tokio::time::timeout(Duration::from_secs(60), sent).await {
                    Err(_) => return Ok((url, Err(anyhow::anyhow!("no answer within 60 s")))),
                    // A socket nobody listens on was left by a node that stopped without
                    // cleaning up (a running node replaces a stale one as it starts): so
                    // is its `control.addr`, whose port another local user may hold by
                    // now. Not asked (the token and the request would go there).
                    Ok(Err(e @ http_client::HttpError::Connect(_))) if is_socket(&socket) => {
                        return Ok((
                            url,
                            Err(anyhow::anyhow!(
                                "no node answers ({e}): the node of this data dir is not \
                                 running (its control files are left from a stop without \
                                 cleanup; `meshd run` replaces them)"
                            )),
                        ));
                    }
                    // Nothing was sent: the TCP API is asked instead.
                    Ok(Err(e @ http_client::HttpError::Connect(_))) => {
                        tracing::debug!(%url, error = %e, "control socket passed over");
                        passed_over = Some(e.to_string());
                    }
                    Ok(r) => return Ok((url, r.map_err(anyhow::Error::from))),
                }
            }
        }
        let url = format!("{}{path}", control_url(ctx, args)?);
        let sent = http_client::send_authorized(method, &url, body, token.as_deref());
        let resp = match tokio::time::timeout(Duration::from_secs(60), sent).await {
            Err(_) => Err(anyhow::anyhow!("no answer within 60 s")),
            Ok(r) => r.map_err(anyhow::Error::from),
        };
        anyhow::Ok((url, resp))
    })?;
    let resp = resp.map_err(|e| match &passed_over {
        Some(socket) => anyhow::anyhow!("{url}: {e} (the control socket: {socket})"),
        None => anyhow::anyhow!("{url}: {e}"),
    })?;
    let value: Value = serde_json::from_slice(&resp.body).map_err(|_| {
        anyhow::anyhow!(
            "{url}: {} {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )
    })?;
    if resp.status.is_success() {
        return Ok(value);
    }
    match serde_json::from_value::<MeshErrorJson>(value.clone()) {
        Ok(e) => Err(e.into_mesh().into()),
        Err(_) => Err(anyhow::anyhow!("{url}: {} {value}", resp.status)),
    }
}

#[derive(serde::Deserialize)]
struct MeshErrorJson {
    #[serde(rename = "error/code")]
    code: String,
    #[serde(default)]
    detail: String,
}

impl MeshErrorJson {
    fn into_mesh(self) -> MeshError {
        match mesh_core::ErrorCode::from_code_str(&self.code) {
            Some(code) => MeshError::new(code, self.detail),
            None => MeshError::invalid(format!("{}: {}", self.code, self.detail)),
        }
    }
}
