//! API tests: the whole app on a random port with a real SQLite file, driven over real
//! HTTP. One binary (modules below), so everything links once.

mod activations;
mod alerts;
mod audit;
mod auth;
mod board;
mod board_chromium;
mod clusters;
mod drill;
mod export;
mod facilities;
mod helpers;
mod history;
mod limits;
mod manual_readings;
mod mqtt;
mod openapi;
mod ops;
mod overview;
mod phone_ack;
mod privacy;
mod rejects;
mod scenarios;
mod shelters;
mod stored_scenarios;
mod towns;
mod transfers;
mod vulnerable;
