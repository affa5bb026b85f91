//! Scenario and property tests of the decider.

mod commands;
mod disconnect;
mod drain;
mod invariants;
mod liveness;
mod placement;
mod plan;
mod props;
mod reports;
mod resources;
mod rollout;
mod scenario;
mod versions;
