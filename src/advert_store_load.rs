//! Reading the durable store back at open ([`load`]).

use mesh_advert::{MemoryStore, StoreError, StoredAdvert};
use mesh_core::artifact::Artifact;
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{ADVERTS, LoadReport, META, REVISION, TOMBSTONES, Writes, split_u64, storage};

/// Rebuilds `mem` from the file; returns the report and the rows to delete (expired
/// advertisements, lapsed tombstones).
pub(super) fn load(
    db: &Database,
    mem: &mut MemoryStore,
    now: &Timestamp,
) -> Result<(LoadReport, Writes), StoreError> {
    let mut report = LoadReport::default();
    let mut stale = Writes::default();
    let tx = db.begin_read().map_err(storage)?;
    match tx.open_table(ADVERTS) {
        Ok(table) => {
            for item in table.iter().map_err(storage)? {
                let (key, value) = item.map_err(storage)?;
                let parsed = split_u64(value.value())
                    .and_then(|(rev, rest)| split_u64(rest).map(|(_, wire)| (rev, wire)))
                    .and_then(|(rev, wire)| {
                        NodeAdvertisement::from_cbor(wire)
                            .ok()
                            .filter(|a| a.node_id().to_string() == key.value())
                            .map(|a| (rev, a, wire.to_vec()))
                    });
                match parsed {
                    Some((_, advert, _)) if now > advert.expires_at() => {
                        report.expired += 1;
                        stale.delete_adverts.push(key.value().to_owned());
                    }
                    Some((revision, advert, wire)) => {
                        mem.restore(StoredAdvert::new(&advert, wire.into(), revision));
                        report.loaded += 1;
                    }
                    None => {
                        tracing::warn!(
                            node = key.value(),
                            "unreadable advertisement entry skipped"
                        );
                        report.unreadable += 1;
                    }
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    match tx.open_table(TOMBSTONES) {
        Ok(table) => {
            for item in table.iter().map_err(storage)? {
                let (key, value) = item.map_err(storage)?;
                let Ok(node) = NodeId::parse(key.value()) else {
                    continue;
                };
                let Some((seq, rest)) = split_u64(value.value()) else {
                    continue;
                };
                let Some((until, _)) = split_u64(rest) else {
                    continue;
                };
                let until =
                    chrono::DateTime::from_timestamp(i64::try_from(until).unwrap_or(i64::MAX), 0)
                        .map(Timestamp::from_instant);
                match until {
                    Some(until) if &until >= now => mem.restore_tombstone(node, seq, until),
                    Some(_) => {
                        report.lapsed += 1;
                        stale.delete_tombstones.push(key.value().to_owned());
                    }
                    None => {}
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    match tx.open_table(META) {
        Ok(t) => {
            if let Some(r) = t.get(REVISION).map_err(storage)? {
                mem.restore_revision(r.value());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    Ok((report, stale))
}
