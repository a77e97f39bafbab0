//! pbxguard: protects a PBX host by banning attackers at the XDP hook.
//!
//! The data path is one-way: log line -> source -> matcher -> engine -> enforcer + store.
//! See DESIGN.md for the map; each module's doc says why it exists.

pub mod config;
pub mod enforce;
pub mod store;
pub mod units;
