//! placeholder

pub mod decider;
