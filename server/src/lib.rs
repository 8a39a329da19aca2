//! The `stockpile` binary's library: configuration ([`config`]) and the command line
//! ([`cli`]). `main.rs` only parses arguments and maps outcomes to exit codes.
//!
//! Invariant: this is the only crate that reads the environment and configuration files;
//! everything below it gets typed values.

mod activations;
pub mod broker;
pub mod cli;
pub mod cluster_follow;
pub mod cluster_state;
pub mod config;
pub mod demo;
pub mod reload;
pub mod serve;
pub mod stress_test;
