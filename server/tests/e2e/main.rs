//! The `stockpile` binary's end-to-end tests, as operators run it: real Mosquitto,
//! InfluxDB, SMTP server, SQLite files, the built binary. One test binary for all of
//! them, because linking is most of the suite's time on two cores (and disk: each
//! binary links the whole service).

mod common;

mod activation;
mod board;
mod check_config;
mod cluster;
mod cluster_board;
mod cluster_voice;
mod demo;
mod deploy;
mod grafana;
mod manual_shelter;
mod map;
mod phone_ack;
mod reload;
mod serve;
mod shard;
mod store_maintenance;
mod stress_board;
mod stress_test;
mod town_page;
mod warning_levels;
