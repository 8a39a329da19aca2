//! Stockpile's domain: the registry of towns and facilities, the live ledger of what
//! each town holds, the coverage and readiness maths
//! (docs/design.md#coverage-and-readiness), and the MQTT wire format
//! (docs/design.md#mqtt-contract).
//!
//! Invariant: this crate does no I/O and knows no tokio. Time comes in as an argument
//! (`now`), files come in as text, so every function here is deterministic and tested
//! with tables.

pub mod broker_url;
pub mod coverage;
pub mod duration;
pub mod id;
pub mod ledger;
pub mod reading;
pub mod registry;
pub mod shard;
pub mod text;
pub mod vulnerable;
pub mod wire;

pub use duration::parse_duration;
pub use id::{CategoryId, ClusterId, DistrictId, FacilityId, IdError, TownId};
pub use ledger::Ledger;
pub use reading::{Observation, Reading};
pub use registry::Registry;
