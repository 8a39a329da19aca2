//! Persistence: embedded SQLite store and the InfluxDB sink.
