//! The domain's tests: wire decoding, registry loading, the ledger, and bad input
//! (property tests and a corpus of nasty payloads). One test binary: linking several
//! costs more than running them all.

mod activation_plans;
mod bad_input;
mod communities;
mod corpus;
mod forecast;
mod ledger;
mod registry_load;
mod shelters;
mod warning_levels;
mod wire_decode;
