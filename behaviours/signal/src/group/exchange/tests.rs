use super::*;
use crate::group::{GroupConfig, Groups};
use mesh_core::NodeKeypair;

fn t0() -> Timestamp {
    Timestamp::parse("2026-11-21T12:00:00Z").unwrap()
}

fn presence(key: &NodeKeypair, swarm: &DiscoveryKey, ttl: i64, now: &Timestamp) -> Vec<u8> {
    let mut g = Groups::new(
        key.node_id(),
        GroupConfig {
            ttl_secs: ttl,
            ..GroupConfig::default()
        },
    );
    g.join(*swarm).unwrap();
    let doc = g.presence_doc(swarm, "announce", &["/ip4/192.0.2.1/tcp/1".into()], now);
    SwarmPresence::sign(doc, key).unwrap().to_cbor()
}

fn table(n: usize, swarm: &DiscoveryKey, now: &Timestamp) -> Vec<(NodeId, Vec<u8>)> {
    let mut v: Vec<(NodeId, Vec<u8>)> = (0..n)
        .map(|_| {
            let k = NodeKeypair::generate();
            (k.node_id(), presence(&k, swarm, 60, now))
        })
        .collect();
    v.sort_by_key(|(n, _)| *n);
    v
}

fn entries(t: &[(NodeId, Vec<u8>)]) -> impl Iterator<Item = (NodeId, &[u8])> {
    t.iter().map(|(n, b)| (*n, b.as_slice()))
}

#[test]
fn requests_round_trip_and_bad_ones_are_refused() {
    let key = DiscoveryKey::from_name("t");
    let after = NodeKeypair::generate().node_id();
    let have = MemberDigest::of(&key, [&after]);
    for r in [
        TableRequest::first(key),
        TableRequest::after(key, after),
        TableRequest::unless(key, have),
    ] {
        assert_eq!(TableRequest::from_cbor(&r.to_cbor()).unwrap(), r);
    }
    let bad = [
        cbor::encode(&serde_json::json!({"swarm/key": "zz"})),
        cbor::encode(&serde_json::json!({"swarm/key": key.to_hex(), "after": 3})),
        cbor::encode(&serde_json::json!({"swarm/key": key.to_hex(), "extra": 1})),
        cbor::encode(&serde_json::json!({"swarm/key": key.to_hex(), "have": "ab"})),
        cbor::encode(&serde_json::json!({"swarm/key": key.to_hex(), "have": 7})),
        cbor::encode(&serde_json::json!({"swarm/key": key.to_hex(), "have": "zz".repeat(32)})),
        cbor::encode(&serde_json::json!([1, 2])),
        b"not cbor".to_vec(),
        vec![0xa1; MAX_REQUEST + 1],
    ];
    for b in bad {
        let e = TableRequest::from_cbor(&b).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
    }
}

#[test]
fn a_table_with_the_asker_s_members_answers_an_empty_page() {
    let now = t0();
    let key = DiscoveryKey::from_name("check");
    let t = table(5, &key, &now);
    let nodes: Vec<NodeId> = t.iter().map(|(n, _)| *n).collect();
    let same = MemberDigest::of(&key, &nodes);
    assert_eq!(
        answer_page(&TableRequest::unless(key, same), &t, &[]),
        Page::default()
    );
    // One member fewer, or another swarm's digest of the same members: the whole table.
    let fewer = MemberDigest::of(&key, &nodes[1..]);
    let other = MemberDigest::of(&DiscoveryKey::from_name("other"), &nodes);
    for have in [fewer, other] {
        let page = answer_page(&TableRequest::unless(key, have), &t, &[]);
        assert_eq!(page.items.len(), 5);
        assert!(!page.more);
    }
    // A later page of a check names the digest too: the rest of a table that differs.
    let later = TableRequest {
        key,
        after: Some(nodes[2]),
        have: Some(fewer),
    };
    assert_eq!(answer_page(&later, &t, &[]).items.len(), 2);
    // Without a digest, as before.
    assert_eq!(
        answer_page(&TableRequest::first(key), &t, &[]).items.len(),
        5
    );
    assert_eq!(
        answer_page(&TableRequest::after(key, nodes[2]), &t, &[])
            .items
            .len(),
        2
    );
}

#[test]
fn a_check_s_answer_pages_through_members_and_leaves_by_node_id() {
    let now = t0();
    let key = DiscoveryKey::from_name("check");
    let all = table(6, &key, &now);
    // Members 0, 2, 4; leaves (stand-ins: any signed bytes) of 1, 3, 5.
    let (members, leaves): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let members: Vec<(NodeId, Vec<u8>)> = members.into_iter().map(|(_, e)| e).collect();
    let leaves: Vec<(NodeId, Vec<u8>)> = leaves.into_iter().map(|(_, e)| e).collect();
    let nodes: Vec<NodeId> = members.iter().map(|(n, _)| *n).collect();
    // Tables that agree on the members: empty, leaves or not.
    let same = MemberDigest::of(&key, &nodes);
    assert_eq!(
        answer_page(&TableRequest::unless(key, same), &members, &leaves),
        Page::default()
    );
    // Tables that differ: members and leaves in node id order.
    let fewer = MemberDigest::of(&key, &nodes[1..]);
    let page = answer_page(&TableRequest::unless(key, fewer), &members, &leaves);
    let want: Vec<Vec<u8>> = all.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(page.items, want);
    let later = TableRequest {
        key,
        after: Some(all[2].0),
        have: Some(fewer),
    };
    assert_eq!(
        answer_page(&later, &members, &leaves).items,
        want[3..].to_vec()
    );
    // A newcomer's fetch: the members alone.
    let fetch = answer_page(&TableRequest::first(key), &members, &leaves);
    let members_only: Vec<Vec<u8>> = members.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(fetch.items, members_only);
}

#[test]
fn pages_are_capped_in_count_and_ordered_and_cover_the_table() {
    let now = t0();
    let key = DiscoveryKey::from_name("paging");
    let t = table(2 * PAGE_MAX + 44, &key, &now);
    let mut after = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = page_of(entries(&t), after.as_ref());
        pages += 1;
        assert!(page.items.len() <= PAGE_MAX);
        let wire = encode_page(&page);
        assert!(wire.len() <= MAX_ANSWER);
        let back = decode_answer(&wire).unwrap();
        assert_eq!(back, page);
        let checked = check_page(back, &now);
        assert!(checked.refused.is_empty() && checked.expired == 0);
        seen.extend(checked.valid.iter().map(|(p, _)| p.node_id()));
        after = checked.last;
        if !checked.more {
            break;
        }
    }
    assert_eq!(pages, 3, "{} members in pages of {PAGE_MAX}", t.len());
    let all: Vec<NodeId> = t.iter().map(|(n, _)| *n).collect();
    assert_eq!(seen, all);
    // After the last member: an empty page, nothing more.
    let end = page_of(entries(&t), all.last());
    assert!(end.items.is_empty() && !end.more);
}

#[test]
fn a_swarm_of_200_members_comes_in_one_page() {
    let now = t0();
    let key = DiscoveryKey::from_name("one exchange");
    let t = table(200, &key, &now);
    let page = page_of(entries(&t), None);
    assert_eq!(page.items.len(), 200);
    assert!(!page.more, "one round trip for the whole table");
    let checked = check_page(decode_answer(&encode_page(&page)).unwrap(), &now);
    assert_eq!(checked.valid.len(), 200);
}

#[test]
fn pages_are_capped_in_bytes_but_hold_at_least_one_presence() {
    let big = vec![0u8; PAGE_BYTES / 3];
    let nodes: Vec<NodeId> = {
        let mut v: Vec<NodeId> = (0..5).map(|_| NodeKeypair::generate().node_id()).collect();
        v.sort();
        v
    };
    let page = page_of(nodes.iter().map(|n| (*n, big.as_slice())), None);
    assert_eq!(page.items.len(), 3);
    assert!(page.more);
    let huge = vec![0u8; PAGE_BYTES + 1];
    let page = page_of(nodes.iter().map(|n| (*n, huge.as_slice())), None);
    assert_eq!(page.items.len(), 1);
    assert!(page.more);
}

#[test]
fn a_bad_signature_is_refused_and_the_valid_ones_are_kept() {
    let now = t0();
    let key = DiscoveryKey::from_name("forged");
    let mut t = table(5, &key, &now);
    // Change one address after signing: the signature no longer verifies.
    let forged = {
        let mut doc = SwarmPresence::from_cbor(&t[2].1).unwrap().into_map();
        doc.insert("addrs".into(), serde_json::json!(["/ip4/192.0.2.9/tcp/9"]));
        cbor::encode(&Value::Object(doc))
    };
    t[2].1 = forged;
    // And one that is not a presence at all.
    t[4].1 = b"garbage".to_vec();
    let page = decode_answer(&encode_page(&page_of(entries(&t), None))).unwrap();
    let checked = check_page(page, &now);
    let valid: Vec<NodeId> = checked.valid.iter().map(|(p, _)| p.node_id()).collect();
    assert_eq!(valid, vec![t[0].0, t[1].0, t[3].0]);
    let codes: Vec<ErrorCode> = checked.refused.iter().map(|e| e.code).collect();
    assert_eq!(codes, vec![ErrorCode::SigInvalid, ErrorCode::ProtoInvalid]);
    assert_eq!(checked.last, Some(t[3].0), "garbage names nobody");
}

#[test]
fn expired_presences_are_dropped_without_blame() {
    let now = t0();
    let key = DiscoveryKey::from_name("expired");
    let old = NodeKeypair::generate();
    let fresh = NodeKeypair::generate();
    let mut t = vec![
        (old.node_id(), presence(&old, &key, 5, &now.plus_secs(-10))),
        (fresh.node_id(), presence(&fresh, &key, 60, &now)),
    ];
    t.sort_by_key(|(n, _)| *n);
    let checked = check_page(page_of(entries(&t), None), &now);
    assert_eq!(checked.valid.len(), 1);
    assert_eq!(checked.valid[0].0.node_id(), fresh.node_id());
    assert_eq!(checked.expired, 1);
    assert!(checked.refused.is_empty());
}

#[test]
fn refusals_carry_their_code_and_malformed_answers_are_refused() {
    let key = DiscoveryKey::from_name("nobody");
    for e in [not_a_member(&key), not_ready(&key), too_often(7)] {
        let got = decode_answer(&encode_refusal(&e)).unwrap_err();
        assert_eq!(got.code, e.code);
    }
    assert_eq!(not_a_member(&key).code, ErrorCode::ProtoInvalid);
    let one = vec![0x82, TRUE, 0x41, 0x00];
    assert_eq!(decode_answer(&one).unwrap().items, vec![vec![0u8]]);
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],                    // no boolean
        vec![0x81, 0x01],              // not a boolean
        vec![0x82, FALSE, 0x61, 0x41], // a text item
        vec![0x82, FALSE, 0x45, 0x00], // truncated
        vec![0x81, FALSE, 0x00],       // trailing bytes
        vec![0x98, 0x02, FALSE, 0x40], // a non-canonical head
        {
            let n = u16::try_from(PAGE_MAX + 2).unwrap().to_be_bytes();
            let mut v = vec![0x99, n[0], n[1], FALSE];
            v.extend(std::iter::repeat_n(0x40, PAGE_MAX + 1));
            v
        }, // too many items
        vec![0u8; MAX_ANSWER + 1],
    ];
    for b in bad {
        assert_eq!(
            decode_answer(&b).unwrap_err().code,
            ErrorCode::ProtoInvalid,
            "{b:?}"
        );
    }
}

/// A page is sorted by node id, one presence per node: copies of one presence are
/// verified once, a node id lower than the one before ends the page (no more pages),
/// and so does the eighth refusal. A hostile server answered 256 copies of one
/// presence, or of forged bytes, each verified.
#[test]
fn a_page_is_read_in_node_order_once_per_node() {
    let (swarm, now) = (DiscoveryKey::from_name("t"), t0());
    let t = table(3, &swarm, &now);
    // 256 copies of one presence: one taken, none refused.
    let copies = Page {
        items: vec![t[0].1.clone(); PAGE_MAX],
        more: true,
    };
    let checked = check_page(copies, &now);
    assert_eq!((checked.valid.len(), checked.refused.len()), (1, 0));
    assert!(checked.more);
    // Out of order: what came before is taken, the rest is not read.
    let shuffled = Page {
        items: vec![t[1].1.clone(), t[0].1.clone(), t[2].1.clone()],
        more: true,
    };
    let checked = check_page(shuffled, &now);
    assert_eq!((checked.valid.len(), checked.refused.len()), (1, 1));
    assert!(!checked.more, "a page out of order asks for no more");
    // Forged presences (each of its own node), in order: eight refusals, then the page
    // ends.
    let mut forged: Vec<(NodeId, Vec<u8>)> = (0..40)
        .map(|_| {
            // One presence with the signature of another of the same key.
            let k = NodeKeypair::generate();
            let mut a = cbor::decode(&presence(&k, &swarm, 60, &now)).unwrap();
            let b = cbor::decode(&presence(&k, &swarm, 61, &now)).unwrap();
            a["signature"] = b["signature"].clone();
            (k.node_id(), cbor::encode(&a))
        })
        .collect();
    forged.sort_by_key(|(n, _)| *n);
    let forged: Vec<Vec<u8>> = forged.into_iter().map(|(_, b)| b).collect();
    for items in [forged.clone(), forged[..MAX_REFUSED_PER_PAGE].to_vec()] {
        let checked = check_page(Page { items, more: true }, &now);
        assert_eq!(checked.refused.len(), MAX_REFUSED_PER_PAGE);
        assert!(
            !checked.more,
            "a page with the last refusal asks for no more"
        );
    }
}
