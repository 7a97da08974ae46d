//! What a peer can make `meshd` write to its log at the default filter: streams it
//! opens beyond a protocol's per-connection cap are dropped without a log line each
//! (libp2p-request-response warns for every one). The real binary with `RUST_LOG`
//! unset, a hostile libp2p peer, loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::time::Duration;

use mesh_core::NodeKeypair;
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use meshd::Meshd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_cap_leave_no_log_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let n = Meshd::start_logged(
        None,
        dir.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"],
        "",
    );
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile
        .connect(n.addr().parse().unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    let patience = Duration::from_secs(2);
    let held = futures::future::join_all(
        (0..40).map(|_| hostile.trickle(peer, "/mesh/signal/1.0.0", &[0x5a; 100], patience)),
    )
    .await;
    // Held to the end: the cap's worth; the others were dropped at once (closed or
    // reset while the hostile peer wrote).
    let kept = held
        .iter()
        .filter(|h| h.as_ref().is_ok_and(|d| *d >= patience))
        .count();
    assert!(
        kept <= mesh_signal::MAX_STREAMS,
        "{kept} streams held: no cap"
    );
    let dropped = held.len() - kept;
    let log = std::fs::read_to_string(n.log_file()).unwrap();
    let lines = log.matches("Dropping inbound stream").count();
    assert_eq!(
        lines, 0,
        "{lines} log lines for {dropped} dropped streams:\n{log}"
    );
}
