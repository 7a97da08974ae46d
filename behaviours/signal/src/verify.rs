//! Verifying the frames of one request, as pure logic (`seen` and `now` given).
//!
//! A frame is parsed first, and only then is its signature checked: a frame whose
//! (signer, `frame/id`) the duplicate filter holds is refused as a replay unverified, and
//! so is a later frame of the same batch with the (signer, `frame/id`) of one that
//! verified (whatever its unsigned fields), so a batch of 64 copies of one frame costs
//! one verification, not 64 (a later one whose first failed is verified by itself: the
//! first may have been a forgery of it). Signatures of
//! the rest are checked frame by frame (`mesh_core::verify_batch`, the accept set of
//! `verify_strict`), then the clock rules; one frame alone with
//! [`Artifact::verify_cbor`].

use std::collections::HashMap;

use mesh_core::{Artifact, ErrorCode, MeshError, MeshResult, SignalFrame, Timestamp};

use crate::dedup::{self, Seen};

/// The refusal of a frame whose (signer, `frame/id`) was taken before.
pub(crate) fn replayed(frame_id: &str) -> MeshError {
    MeshError::new(
        ErrorCode::HsReplay,
        format!("signal-frame.v1: frame {frame_id} seen before"),
    )
}

/// Verifies `items` (see the module).
pub(crate) fn verify(
    items: &[&[u8]],
    seen: &Seen,
    now: &Timestamp,
) -> Vec<MeshResult<SignalFrame>> {
    verify_with(items, seen, now, mesh_core::verify_batch)
}

/// [`verify`] with the signature check given (tests count its calls).
fn verify_with(
    items: &[&[u8]],
    seen: &Seen,
    now: &Timestamp,
    check: impl FnOnce(&[SignalFrame]) -> Vec<MeshResult<()>>,
) -> Vec<MeshResult<SignalFrame>> {
    let mut out: Vec<Option<MeshResult<SignalFrame>>> = vec![None; items.len()];
    let mut first: HashMap<dedup::FrameDigest, usize> = HashMap::new();
    let mut copies: Vec<(usize, usize, String)> = Vec::new();
    let (mut todo, mut idx) = (Vec::new(), Vec::new());
    for (i, bytes) in items.iter().enumerate() {
        match SignalFrame::from_cbor(bytes) {
            Err(e) => out[i] = Some(Err(e)),
            Ok(f) => {
                let digest = dedup::digest(&f.from(), f.frame_id());
                if seen.contains(&digest, now) {
                    out[i] = Some(Err(replayed(f.frame_id())));
                } else if let Some(&j) = first.get(&digest) {
                    copies.push((i, j, f.frame_id().to_owned()));
                } else {
                    first.insert(digest, i);
                    todo.push(f);
                    idx.push(i);
                }
            }
        }
    }
    if let ([_], [i]) = (todo.as_slice(), idx.as_slice())
        && items.len() == 1
    {
        // A lone frame: its signing input cut from the received bytes, as always.
        out[*i] = Some(SignalFrame::verify_cbor(items[*i], now));
    } else {
        let sigs = check(&todo);
        for ((frame, i), sig) in todo.into_iter().zip(idx).zip(sigs) {
            out[i] = Some(sig.and_then(|()| frame.validate(now)).map(|()| frame));
        }
    }
    for (i, j, frame_id) in copies {
        out[i] = Some(match out[j] {
            Some(Ok(_)) => Err(replayed(&frame_id)),
            _ => SignalFrame::verify_cbor(items[i], now),
        });
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(MeshError::invalid("signal-frame.v1: not verified"))))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec;
    use mesh_core::NodeKeypair;
    use serde_json::{Value, json};

    fn frame(from: &NodeKeypair, to: &NodeKeypair, i: usize) -> SignalFrame {
        let now = Timestamp::now();
        let Value::Object(doc) = json!({
            "schema/v": 1, "message/kind": "signal-frame.v1", "frame/id": format!("f{i}"),
            "kind": "connect_request", "from": from.node_id().to_string(),
            "to": to.node_id().to_string(), "correlation/id": format!("c{i}"),
            "created-at": now.as_str(), "expires-at": now.plus_secs(60).as_str(),
            "payload": {},
        }) else {
            unreachable!()
        };
        SignalFrame::sign(doc, from).unwrap()
    }

    #[test]
    fn a_batch_is_verified_frame_by_frame() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let mut wires: Vec<Vec<u8>> = (0..5).map(|i| frame(&a, &b, i).to_cbor()).collect();
        // An altered frame (signature no longer matches), a malformed one, an expired one.
        let mut doc = frame(&a, &b, 10).to_json();
        doc["to"] = json!(NodeKeypair::generate().node_id().to_string());
        wires[1] = SignalFrame::from_json(doc).unwrap().to_cbor();
        wires[3] = vec![0xa1, 0x61];
        let body = codec::join(&wires.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let items = codec::split(&body).unwrap();
        let now = Timestamp::now();
        let seen = Seen::new(16);
        let got = verify(&items, &seen, &now);
        assert!(got[0].is_ok() && got[2].is_ok() && got[4].is_ok());
        assert_eq!(got[1].as_ref().unwrap_err().code, ErrorCode::SigInvalid);
        assert!(got[3].is_err());
        assert_eq!(got[2].as_ref().unwrap().frame_id(), "f2");
        let late = now.plus_secs(120);
        assert!(verify(&items, &seen, &late).iter().all(Result::is_err));
    }

    #[test]
    fn copies_in_a_batch_are_verified_once() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let one = frame(&a, &b, 1).to_cbor();
        let other = frame(&a, &b, 2).to_cbor();
        let mut wires = vec![one.clone(); 63];
        wires.push(other);
        let items: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        let now = Timestamp::now();
        let mut checked = 0;
        let got = verify_with(&items, &Seen::new(16), &now, |frames| {
            checked += frames.len();
            mesh_core::verify_batch(frames)
        });
        assert_eq!(checked, 2, "one verification per distinct frame");
        assert_eq!(got.len(), 64);
        assert_eq!(got[0].as_ref().unwrap().frame_id(), "f1");
        assert!(
            got[1..63]
                .iter()
                .all(|r| r.as_ref().unwrap_err().code == ErrorCode::HsReplay),
            "the later copies are replays"
        );
        assert_eq!(got[63].as_ref().unwrap().frame_id(), "f2");
        // A forgery of f3 first, then f3 itself: the second is verified by itself.
        let genuine = frame(&a, &b, 3);
        let mut doc = genuine.to_json();
        doc["to"] = json!(NodeKeypair::generate().node_id().to_string());
        let forged = SignalFrame::from_json(doc).unwrap().to_cbor();
        let wires = [forged, genuine.to_cbor()];
        let items: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        let got = verify(&items, &Seen::new(16), &now);
        assert_eq!(got[0].as_ref().unwrap_err().code, ErrorCode::SigInvalid);
        assert_eq!(got[1].as_ref().unwrap().frame_id(), "f3");
    }

    #[test]
    fn frames_seen_before_are_refused_unverified() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let now = Timestamp::now();
        let taken = frame(&a, &b, 1);
        let mut seen = Seen::new(16);
        seen.insert(
            dedup::digest(&taken.from(), taken.frame_id()),
            taken.expires_at().clone(),
            mesh_core::Source::Local,
            &now,
        );
        let wires = [taken.to_cbor(), frame(&a, &b, 2).to_cbor()];
        let items: Vec<&[u8]> = wires.iter().map(Vec::as_slice).collect();
        let mut checked = 0;
        let got = verify_with(&items, &seen, &now, |frames| {
            checked += frames.len();
            mesh_core::verify_batch(frames)
        });
        assert_eq!(checked, 1, "the replay is not verified");
        assert_eq!(got[0].as_ref().unwrap_err().code, ErrorCode::HsReplay);
        assert!(got[1].is_ok());
        // Alone, too.
        let got = verify(&items[..1], &seen, &now);
        assert_eq!(got[0].as_ref().unwrap_err().code, ErrorCode::HsReplay);
    }
}
