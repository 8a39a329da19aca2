//! Dev-only: starts real Mosquitto, InfluxDB, VictoriaMetrics and an SMTP server on free ports for tests.
