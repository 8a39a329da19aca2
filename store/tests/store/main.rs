//! The store against real SQLite files, a real InfluxDB 1.6 and VictoriaMetrics: the
//! write batch and its readers, maintenance, line protocol, the sink, history. One test
//! binary: linking several costs more than running them all.

mod activations;
mod influx_support;

mod influx_history;
mod influx_line;
mod influx_sink;
mod maintenance;
mod reading_source;
mod sqlite;
mod transfers;
