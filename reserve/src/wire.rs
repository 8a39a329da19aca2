//! MQTT wire format (DESIGN.md §5). Being written.
