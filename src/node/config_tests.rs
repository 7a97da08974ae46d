//! Tests of the node's configuration file.

use super::*;

#[test]
fn empty_file_is_the_defaults() {
    let c = NodeConfig::from_toml("").unwrap();
    assert_eq!(c, NodeConfig::default());
    assert_eq!(c.listen_addrs().unwrap().len(), DEFAULT_LISTEN.len());
    assert_eq!(c.bootstrap.addrs().unwrap().len(), PUBLIC_BOOTSTRAP.len());
}

#[test]
fn full_file_parses() {
    let c = NodeConfig::from_toml(
        r#"
        listen = ["/ip4/127.0.0.1/tcp/0"]
        bootstrap = "none"
        kad_mode = "server"
        relay_server = true
        metrics = "127.0.0.1:9100"
        [[seeds]]
        node_id = "node:did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
        addr = "/ip4/127.0.0.1/tcp/4001"
        label = "seed-a"
        [limits]
        max_sessions = 8
        [http]
        header_timeout_secs = 5
        max_connections = 64
        "#,
    )
    .unwrap();
    assert_eq!(c.bootstrap.addrs().unwrap(), Vec::<Multiaddr>::new());
    assert_eq!(c.kad_mode, KadMode::Server);
    assert_eq!(c.seeds[0].label.as_deref(), Some("seed-a"));
    assert_eq!(c.limits.max_sessions, 8);
    assert_eq!(c.limits.hot_sessions, 2);
    let http = c.http.limits();
    assert_eq!(http.header_timeout, Duration::from_secs(5));
    assert_eq!(http.request_timeout, Duration::from_secs(30));
    assert_eq!(
        (http.max_connections, http.max_connections_per_client),
        (64, 32)
    );
}

#[test]
fn signal_policy_parses_and_defaults_to_known_peers() {
    let d = NodeConfig::default().signal;
    assert_eq!(d.punch_for, PunchFor::Known);
    assert!(!d.private_candidates);
    let c = NodeConfig::from_toml("[signal]\npunch_for = \"anyone\"\nprivate_candidates = true\n")
        .unwrap();
    assert_eq!(c.signal.punch_for, PunchFor::Anyone);
    assert!(c.signal.private_candidates);
    let c = NodeConfig::from_toml("[signal]\npunch_for = \"nobody\"\n").unwrap();
    assert_eq!(c.signal.punch_for, PunchFor::Nobody);
    assert!(NodeConfig::from_toml("[signal]\npunch_for = \"all\"\n").is_err());
    let c = NodeConfig::from_toml("[signal]\nnetwork_frame_burst = 2048\n").unwrap();
    assert_eq!(c.signal.network_frames().burst, 2048);
    assert!(NodeConfig::from_toml("[signal]\nnetwork_frame_burst = 0\n").is_err());
    assert!(NodeConfig::from_toml("[signal]\nnetwork_frames_per_minute = 0\n").is_err());
}

#[test]
fn explicit_bootstrap_list() {
    let c = NodeConfig::from_toml(
        r#"bootstrap = ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8"]"#,
    )
    .unwrap();
    assert_eq!(c.bootstrap.addrs().unwrap().len(), 1);
}

#[test]
fn errors_name_the_problem() {
    let e = NodeConfig::from_toml("listen = [\"not an address\"]").unwrap_err();
    assert!(e.to_string().contains("listen"), "{e}");
    let e = NodeConfig::from_toml("colour = 3").unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = NodeConfig::from_toml("[limits]\nmax_sessions = 0").unwrap_err();
    assert!(e.to_string().contains("max_sessions"), "{e}");
    let e = NodeConfig::from_toml("[limits]\nread_budget_bytes = 1048576").unwrap_err();
    assert!(e.to_string().contains("read_budget_bytes"), "{e}");
    let c = NodeConfig::from_toml("[limits]\nread_budget_bytes = 8388608").unwrap();
    assert_eq!(c.limits.read_budget_bytes, 8 << 20);
    let e = NodeConfig::from_toml("[http]\nheader_timeout_secs = 0").unwrap_err();
    assert!(e.to_string().contains("header_timeout_secs"), "{e}");
    let e = NodeConfig::from_toml("[http]\nmax_connections = 8\nmax_connections_per_client = 9")
        .unwrap_err();
    assert!(e.to_string().contains("max_connections_per_client"), "{e}");
    let e = NodeConfig::from_toml("advert_ttl_secs = 86401").unwrap_err();
    assert!(e.to_string().contains("advert_ttl_secs"), "{e}");
    assert!(NodeConfig::from_toml("advert_ttl_secs = 86400").is_ok());
    let e = NodeConfig::from_toml("[swarm]\ncheck_secs = 0").unwrap_err();
    assert!(e.to_string().contains("check_secs"), "{e}");
    let c = NodeConfig::from_toml("[swarm]\ncheck_secs = 5").unwrap();
    assert_eq!(c.swarm.check_secs, 5);
    let e = NodeConfig::from_toml("control = \"0.0.0.0:1\"").unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    let e = NodeConfig::from_toml("bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]").unwrap_err();
    assert!(e.to_string().contains("/p2p"), "{e}");
    let e = NodeConfig::from_toml(
        "[[seeds]]\nnode_id = \"node:did:key:nope\"\naddr = \"/ip4/1.2.3.4/tcp/1\"",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("node_id") || e.to_string().contains("did:key"),
        "{e}"
    );
}

#[test]
fn the_store_section_sets_the_limits_and_is_checked() {
    let c = NodeConfig::from_toml(
        "[store]\nmax_entries = 500\nmax_record_bytes = 4096\nsweep_secs = 30\n",
    )
    .unwrap();
    let limits = c.store.limits();
    assert_eq!((limits.max_entries, limits.max_record_bytes), (500, 4096));
    assert_eq!(
        limits.max_bytes,
        mesh_advert::StoreLimits::default().max_bytes
    );
    assert_eq!(c.store.sweep_every(), Duration::from_secs(30));
    // A source's share defaults to a quarter of each cap, and can be set.
    assert_eq!(
        (limits.per_source_entries, limits.per_source_bytes),
        (125, mesh_advert::StoreLimits::default().max_bytes / 4)
    );
    let c = NodeConfig::from_toml("[store]\nper_source_entries = 7\nper_source_bytes = 70000\n")
        .unwrap();
    let limits = c.store.limits();
    assert_eq!(
        (limits.per_source_entries, limits.per_source_bytes),
        (7, 70_000)
    );
    for bad in [
        "[store]\nper_source_entries = 0\n",
        "[store]\nper_source_bytes = 100\n",
        "[store]\nsweep_secs = 0\n",
        "[store]\nmax_entries = 0\n",
        "[store]\nmax_bytes = 1000\nmax_record_bytes = 2000\n",
        "[store]\nunknown = 1\n",
    ] {
        assert!(NodeConfig::from_toml(bad).is_err(), "{bad}");
    }
}

/// An idle timeout of 0 had libp2p close every connection no handler kept, at once; one
/// beyond a day is refused too.
#[test]
fn the_idle_timeout_is_within_a_second_and_a_day() {
    for bad in ["idle_timeout_secs = 0\n", "idle_timeout_secs = 86401\n"] {
        let e = NodeConfig::from_toml(bad).unwrap_err();
        assert!(e.to_string().contains("idle_timeout_secs"), "{bad}: {e}");
    }
    assert!(NodeConfig::from_toml("idle_timeout_secs = 1\n").is_ok());
}

/// A configuration path naming a device that never ends (or a file that grows past the
/// cap) is refused after at most `MAX_CONFIG_BYTES` read, not read until memory runs out.
#[test]
fn a_configuration_file_is_read_within_its_cap() {
    let zero = std::path::Path::new("/dev/zero");
    if zero.exists() {
        let e = NodeConfig::from_file(zero).unwrap_err();
        assert!(e.to_string().contains("/dev/zero"), "{e}");
    }
}

#[test]
fn the_quic_retry_threshold_is_half_the_quic_share_unless_set() {
    let c = NodeConfig::from_toml("").unwrap();
    assert_eq!(c.limits.pending_quic(), 32);
    assert_eq!(c.limits.quic_pending_before_retry(), 16);
    let c = NodeConfig::from_toml("[limits]\nquic_retry_above = 0").unwrap();
    assert_eq!(c.limits.quic_pending_before_retry(), 0);
    let c = NodeConfig::from_toml("[limits]\nmax_pending_incoming = 2").unwrap();
    assert_eq!(c.limits.quic_pending_before_retry(), 1);
}
