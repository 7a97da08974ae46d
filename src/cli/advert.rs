//! `meshd directory` and `meshd advert publish|lookup|withdraw`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use libmesh::advert_store::DurableStore;
use libmesh::directory::{DirectoryConfig, SharedStore, serve_with_hosts};
use libmesh::directory_client::{DirectoryClient, is_url};
use libmesh::mesh_client::{Ask, request};
use mesh_advert::own::{DEFAULT_TTL_SECS, advert_for, next_sequence, sequence_clock};
use mesh_advert::{Answer, NodeWithdrawal, StoreLimits};
use mesh_core::artifact::Artifact;
use mesh_core::{IdentityStore, MeshError, NodeAdvertisement, NodeId, Timestamp};
use serde_json::{Value, json};

use super::{Ctx, print_json};

#[derive(Debug, Args)]
pub(crate) struct DirectoryArgs {
    /// Address to serve HTTP on, e.g. 127.0.0.1:8080 (port 0 picks one; the bound
    /// address is printed first).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// A name to answer in `Host` (repeatable), e.g. the public name a reverse proxy
    /// passes on. On loopback (or with a name given) only these, IP addresses and
    /// localhost are answered: a page whose DNS name was rebound to 127.0.0.1 is not.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdvertCommand {
    /// Sign this node's advertisement for the given addresses and publish it.
    Publish {
        /// A seed directory (`https://host[:port]`, or `http://` on a trusted network)
        /// or a node (`/ip4/…/p2p/<peer id>`).
        #[arg(long, value_name = "URL|MULTIADDR")]
        to: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// An address to advertise (repeatable), e.g. /ip4/203.0.113.5/udp/4001/quic-v1.
        #[arg(long = "addr", value_name = "MULTIADDR", required = true)]
        addrs: Vec<libp2p::Multiaddr>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
        ttl: i64,
    },
    /// Withdraw the running node's advertisement: it signs a `node-withdrawal.v1`,
    /// keeps the tombstone, sends it to its session peers and replaces its mesh-DHT
    /// record; it then stops refreshing its advertisement until `meshd advert publish`
    /// through the node (POST /publish) or a restart. With --to, the withdrawal also
    /// goes to a seed directory or a node.
    Withdraw {
        /// Also send the withdrawal to a seed directory (`https://host[:port]`, or
        /// `http://` on a trusted network) or a node (`/ip4/…/p2p/<peer id>`).
        #[arg(long, value_name = "URL|MULTIADDR")]
        to: Option<String>,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        client: super::node::ClientArgs,
    },
    /// Fetch and verify a node's advertisement.
    Lookup {
        /// The node.
        node_id: String,
        /// A seed directory (`https://host[:port]`, or `http://` on a trusted network)
        /// or a node (`/ip4/…/p2p/<peer id>`).
        #[arg(long, value_name = "URL|MULTIADDR")]
        from: String,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

/// How an `https://` directory is checked.
#[derive(Debug, Args)]
pub(crate) struct TlsArgs {
    /// A PEM file of extra trusted root certificates (repeatable), for a directory whose
    /// certificate comes from a private CA; the web PKI roots are always trusted.
    #[arg(long = "tls-root", value_name = "FILE")]
    roots: Vec<std::path::PathBuf>,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn open_store(ctx: &Ctx) -> anyhow::Result<DurableStore> {
    let (store, report) =
        DurableStore::open(&ctx.data_dir, StoreLimits::default(), &Timestamp::now()).map_err(
            |e| anyhow::anyhow!("advertisement store in {}: {e}", ctx.data_dir.display()),
        )?;
    tracing::info!(?report, "advertisement store loaded");
    Ok(store)
}

pub(crate) fn directory(ctx: &Ctx, args: DirectoryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr()?;
        let line = json!({"directory": format!("http://{addr}"), "store": store.path().display().to_string()});
        super::print_line_or_exit(&line.to_string());
        let store = Arc::new(store);
        let shared: SharedStore = store.clone();
        // Expired advertisements leave memory and the file on a timer (as in the node).
        let sweeper = tokio::spawn(async move {
            let every = libmesh::node::StoreSettings::default().sweep_every();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.sweep(&Timestamp::now())).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "advertisement store sweep failed"),
                    Ok(Ok(_)) => {}
                    Err(e) => tracing::warn!(error = %e, "advertisement store sweep task"),
                }
            }
        });
        let stop = super::signals::stop_signal()?;
        let served = serve_with_hosts(listener, shared, DirectoryConfig::default(), &args.hosts, async {
            let signal = stop.await;
            tracing::info!(signal, "stopping");
        })
        .await;
        sweeper.abort();
        served?;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn run(ctx: &Ctx, cmd: AdvertCommand) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        AdvertCommand::Publish {
            to,
            addrs,
            ttl,
            tls,
        } => {
            let id = IdentityStore::new(&ctx.data_dir).load_or_generate(&Timestamp::now())?;
            let store = open_store(ctx)?;
            let now = Timestamp::now();
            let seq = next_sequence(store.own_sequence()?, sequence_clock(&now));
            let advert = advert_for(&id.keypair, &addrs, seq, &now, ttl)?;
            store.set_own_sequence(seq)?;
            drop(store);
            let outcome = rt.block_on(publish(&id.keypair, &to, &tls, &advert))?;
            print_json(&json!({"published": advert.to_json(), "to": to, "result": outcome}));
            Ok(ExitCode::SUCCESS)
        }
        AdvertCommand::Withdraw { to, tls, client } => {
            let done = super::node::call_value(ctx, &client, Method::POST, "/withdraw", None)?;
            let Some(to) = to else {
                print_json(&json!({"withdrawn": done}));
                return Ok(ExitCode::SUCCESS);
            };
            let now = Timestamp::now();
            let w = NodeWithdrawal::verify_json(done["withdrawal"].clone(), &now)
                .map_err(|e| e.context("the node's withdrawal"))?;
            let key = IdentityStore::new(&ctx.data_dir)
                .load_or_generate(&now)?
                .keypair;
            let outcome = rt.block_on(send_withdrawal(&key, &to, &tls, &w))?;
            print_json(&json!({"withdrawn": done, "to": to, "result": outcome}));
            Ok(ExitCode::SUCCESS)
        }
        AdvertCommand::Lookup { node_id, from, tls } => {
            let node = NodeId::parse(&node_id).map_err(MeshError::from)?;
            let advert = rt.block_on(lookup(ctx, node, &from, &tls))?;
            trace_lookup(ctx, &from, Ok(&advert));
            print_json(&advert.to_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Traces what a lookup brought (with `--trace`): `advertisement/fetched` for a
/// verified advertisement, `advertisement/rejected` with its code for a directory's
/// answer that failed verification (`Err`).
fn trace_lookup(ctx: &Ctx, from: &str, result: Result<&NodeAdvertisement, &MeshError>) {
    use libmesh::node::discovery_trace::{Source, fetched, rejected};
    if !ctx.trace.enabled() {
        return;
    }
    let now = Timestamp::now();
    let Ok(me) = IdentityStore::new(&ctx.data_dir).load_or_generate(&now) else {
        return;
    };
    let me = me.keypair.node_id();
    let source = if is_url(from) {
        Source::Directory
    } else {
        Source::Peer
    };
    let peer = from
        .parse::<libp2p::Multiaddr>()
        .ok()
        .and_then(|a| libmesh::node::Target::Addr(a).peer());
    let event = match result {
        Ok(ad) => fetched(me, peer, &ad.node_id(), ad.sequence_no(), source, &now),
        Err(e) => rejected(me, peer, e, source, &now),
    };
    ctx.trace.emit(&event);
}

/// Where a signed artifact goes: a directory (`PUT /adv/{node-id}`, through the
/// HTTPS-capable client) or a node over `/mesh/advert/1.0.0`.
enum Sent {
    /// The directory's answer: its status and JSON body.
    Directory(StatusCode, Value),
    /// The node's answer.
    Node(Result<Value, MeshError>),
}

async fn send_to(
    key: &mesh_core::NodeKeypair,
    to: &str,
    tls: &TlsArgs,
    node: NodeId,
    json_body: Value,
    ask: Ask,
) -> anyhow::Result<Sent> {
    if is_url(to) {
        let url = format!("{}/adv/{node}", to.trim_end_matches('/'));
        let r = DirectoryClient::new(&tls.roots)
            .map_err(MeshError::from)?
            .send(Method::PUT, &url, Some(serde_json::to_vec(&json_body)?))
            .await
            .map_err(MeshError::from)?;
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        return Ok(Sent::Directory(r.status, body));
    }
    let target: libp2p::Multiaddr = to
        .parse()
        .map_err(|e| anyhow::anyhow!("`{to}` is neither a URL nor a multiaddr: {e}"))?;
    let answer = request(key, &target, ask, Duration::from_secs(15)).await?;
    Ok(Sent::Node(answer.map(
        |a| json!({"status": format!("{a:?}").to_lowercase()}),
    )))
}

async fn publish(
    key: &mesh_core::NodeKeypair,
    to: &str,
    tls: &TlsArgs,
    advert: &NodeAdvertisement,
) -> anyhow::Result<Value> {
    let ask = Ask::Publish(Box::new(advert.clone()));
    match send_to(key, to, tls, advert.node_id(), advert.to_json(), ask).await? {
        Sent::Directory(StatusCode::CREATED, body) => Ok(body),
        Sent::Directory(status, body) => Err(refusal(status, &body)),
        Sent::Node(answer) => Ok(answer?),
    }
}

/// Sends a withdrawal to a directory (`PUT /adv/{node-id}` with the withdrawal as the
/// body; `200` with `{"status": "withdrawn"}`) or to a node over `/mesh/advert/1.0.0`.
async fn send_withdrawal(
    key: &mesh_core::NodeKeypair,
    to: &str,
    tls: &TlsArgs,
    w: &NodeWithdrawal,
) -> anyhow::Result<Value> {
    let ask = Ask::Withdraw(Box::new(w.clone()));
    match send_to(key, to, tls, w.node_id(), w.to_json(), ask).await? {
        Sent::Directory(StatusCode::OK, body) => Ok(body),
        Sent::Directory(StatusCode::CONFLICT, body) => Ok(already_current(
            &refusal(StatusCode::CONFLICT, &body).to_string(),
        )),
        Sent::Directory(status, body) => Err(refusal(status, &body)),
        Sent::Node(Err(e)) if e.code == mesh_core::ErrorCode::AdvStaleSeq => {
            Ok(already_current(&e.to_string()))
        }
        Sent::Node(answer) => Ok(answer?),
    }
}

/// The target refused the withdrawal as stale: it holds this withdrawal already (a
/// session peer forwarded it) or a later one. The withdrawal was just signed with the
/// node's highest sequence number, so nothing newer of the node can be there: the
/// target is up to date, which is what was asked.
fn already_current(detail: &str) -> Value {
    json!({"status": "already-current", "detail": detail})
}

async fn lookup(
    ctx: &Ctx,
    node: NodeId,
    from: &str,
    tls: &TlsArgs,
) -> anyhow::Result<NodeAdvertisement> {
    let now = Timestamp::now();
    if is_url(from) {
        let url = format!("{}/adv/{node}", from.trim_end_matches('/'));
        let r = DirectoryClient::new(&tls.roots)
            .map_err(MeshError::from)?
            .send(Method::GET, &url, None)
            .await
            .map_err(MeshError::from)?;
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status == StatusCode::NOT_FOUND {
            anyhow::bail!("{node} has no advertisement at {from}");
        }
        if r.status != StatusCode::OK {
            return Err(refusal(r.status, &body));
        }
        let advert = NodeAdvertisement::verify_json(body, &now).and_then(|a| {
            if a.node_id() == node {
                Ok(a)
            } else {
                Err(MeshError::invalid(
                    "the directory answered with another node's advertisement",
                ))
            }
        });
        if let Err(e) = &advert {
            trace_lookup(ctx, from, Err(e));
        }
        return Ok(advert?);
    }
    let target: libp2p::Multiaddr = from
        .parse()
        .map_err(|e| anyhow::anyhow!("`{from}` is neither a URL nor a multiaddr: {e}"))?;
    let key = IdentityStore::new(&ctx.data_dir)
        .load_or_generate(&now)?
        .keypair;
    match request(&key, &target, Ask::Lookup(node), Duration::from_secs(15)).await? {
        // The behaviour has verified it and checked it is about `node`.
        Ok(Answer::Found(advert)) => Ok(*advert),
        Ok(Answer::NotFound) => anyhow::bail!("{node} has no advertisement at {from}"),
        Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
        Err(e) => Err(e.into()),
    }
}

/// A refusal from the directory, with its frozen code when the body carries one.
/// A directory's refusal as an error: its frozen code when the body carries one (a
/// libmesh directory), else what the Orbiplex memo's keys say (`"reason":
/// "stale-sequence"` is `E_ADV_STALE_SEQ`), else the status and body.
pub(super) fn refusal(status: StatusCode, body: &Value) -> anyhow::Error {
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let code = text("error/code")
        .and_then(mesh_core::ErrorCode::from_code_str)
        .or_else(|| {
            (text("reason") == Some("stale-sequence")).then_some(mesh_core::ErrorCode::AdvStaleSeq)
        });
    let detail = match (text("detail"), body.get("current/sequence-no")) {
        (Some(d), _) => d.to_owned(),
        (None, Some(current)) => format!(
            "sequence {} is not above {current}",
            body.get("submitted/sequence-no").unwrap_or(&Value::Null)
        ),
        (None, None) => String::new(),
    };
    match code {
        Some(code) => MeshError::new(code, format!("HTTP {status}: {detail}")).into(),
        None => anyhow::anyhow!("HTTP {status}: {body}"),
    }
}
