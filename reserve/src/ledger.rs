//! The live ledger. Being written.
#[derive(Debug)]
pub struct Ledger;
