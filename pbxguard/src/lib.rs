//! pbxguard: protects a PBX host by banning attackers at the XDP hook.
//!
//! The data path is one-way: log line -> source -> matcher -> engine -> enforcer + store.
//! See ARCHITECTURE.md for the map; each module's doc says why it exists.

pub mod alert;
pub mod audit;
pub mod bouncer;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod engine;
pub mod feeds;
pub mod fraud;
pub mod geo;
pub mod guard;
pub mod ledger;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod source;
pub mod store;
pub mod trust;
pub mod units;
