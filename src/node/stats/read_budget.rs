//! The node's read budget in `/metrics`: `libmesh_read_budget_held_bytes`,
//! `libmesh_read_budget_cap_bytes` and `libmesh_read_budget_dropped_total` (reads
//! dropped or refused for room), read from the budget at each scrape.

use libp2p::metrics::Registry;
use mesh_core::ReadBudget;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
struct Budget(ReadBudget);

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: usize) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Budget {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        gauge(
            &mut e,
            "read_budget_held_bytes",
            "Bytes that requests and answers being read on libmesh's protocols and the DHTs hold",
            self.0.held(),
        )?;
        gauge(
            &mut e,
            "read_budget_cap_bytes",
            "The cap of the read budget (limits.read_budget_bytes)",
            self.0.cap(),
        )?;
        let c = ConstCounter::new(self.0.dropped());
        c.encode(e.encode_descriptor(
            "read_budget_dropped",
            "Reads dropped or refused for room in the read budget",
            None,
            c.metric_type(),
        )?)
    }
}

/// Registers `budget`'s figures under `libmesh_` in `registry`.
pub fn register(registry: &mut Registry, budget: &ReadBudget) {
    registry
        .sub_registry_with_prefix("libmesh")
        .register_collector(Box::new(Budget(budget.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_read_at_each_scrape() {
        let budget = ReadBudget::new(1000);
        let mut registry = Registry::default();
        register(&mut registry, &budget);
        let (old, young) = (budget.hold(), budget.hold());
        old.grow(600).unwrap_or_else(|e| panic!("{e}"));
        young.grow(300).unwrap_or_else(|e| panic!("{e}"));
        // An older read never drops a younger one: it is refused.
        assert!(old.grow(200).is_err());
        let text = super::super::encode(&registry).unwrap_or_default();
        for line in [
            "libmesh_read_budget_held_bytes 900",
            "libmesh_read_budget_cap_bytes 1000",
            "libmesh_read_budget_dropped_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }
}
