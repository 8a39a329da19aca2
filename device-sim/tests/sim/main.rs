//! The simulator against a real Mosquitto: scenarios, faults, load. One test binary:
//! linking several costs more than running them all.

mod common;

mod faults;
mod load;
mod scenarios;
mod shelters;
