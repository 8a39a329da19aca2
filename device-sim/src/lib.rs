//! Gateway simulator: scenarios, faults and load generation.
