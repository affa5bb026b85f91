//! Why placement could not place a job, as it saw the fleet: recorded in the log
//! (`JobBlocked`) and shown by `job describe`, so the answer holds for any past moment.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::Resource;

/// The nodes placement read for a job, and what ruled each out. A node is counted once,
/// for the first of: lost, ineligible, the selector, a constraint, its cap, a resource it
/// is short of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The job's slots (or daemon nodes) that wait for an execution.
    pub unplaced: u32,
    /// Every node placement knows.
    pub nodes: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lost: u32,
    /// Nodes made ineligible for new work.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ineligible: u32,
    /// Nodes whose labels lack a selector pair.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub selector: u32,
    /// Nodes ruled out by each constraint, written as `zone in [a]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, u32>,
    /// Nodes at their cap on executions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub capped: u32,
    /// Nodes short of each resource (the first one short, in the order cpu, memory, disk).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exhausted: BTreeMap<Resource, u32>,
    /// Nodes that could take one, though not the one a pinned slot needs or not enough
    /// for every slot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub available: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Placement {
    /// The resource that ruled out the most nodes, if any did: the one to add.
    pub fn shortest(&self) -> Option<Resource> {
        self.exhausted
            .iter()
            .max_by_key(|(resource, nodes)| (**nodes, std::cmp::Reverse(**resource)))
            .map(|(resource, _)| *resource)
    }
}

impl fmt::Display for Placement {
    /// `2 unplaced: 3 nodes, 1 lost, 1 short of memory, 1 ruled out by zone in [a]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = |n: u32| if n == 1 { "node" } else { "nodes" };
        write!(
            f,
            "{} unplaced: {} {} considered",
            self.unplaced,
            self.nodes,
            nodes(self.nodes)
        )?;
        if self.lost > 0 {
            write!(f, ", {} lost", self.lost)?;
        }
        if self.ineligible > 0 {
            write!(f, ", {} ineligible", self.ineligible)?;
        }
        if self.selector > 0 {
            write!(f, ", {} not matching the selector", self.selector)?;
        }
        for (constraint, n) in &self.constraints {
            write!(f, ", {n} ruled out by {constraint}")?;
        }
        if self.capped > 0 {
            write!(f, ", {} at their cap", self.capped)?;
        }
        for (resource, n) in &self.exhausted {
            write!(f, ", {n} short of {resource}")?;
        }
        if self.available > 0 {
            write!(f, ", {} with room", self.available)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_says_what_ruled_out_each_node_and_names_the_shortest_resource() {
        let p = Placement {
            unplaced: 2,
            nodes: 5,
            lost: 1,
            constraints: [("zone in [a]".to_owned(), 1)].into(),
            exhausted: [(Resource::Cpu, 1), (Resource::Memory, 2)].into(),
            ..Placement::default()
        };
        assert_eq!(
            p.to_string(),
            "2 unplaced: 5 nodes considered, 1 lost, 1 ruled out by zone in [a], \
             1 short of cpu, 2 short of memory"
        );
        assert_eq!(p.shortest(), Some(Resource::Memory));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["exhausted"]["memory"], 2);
        assert!(json.get("selector").is_none(), "zeros are left out: {json}");
        assert_eq!(Placement::default().shortest(), None);
    }
}
