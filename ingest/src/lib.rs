//! MQTT subscriber: decode, validate, apply to the ledger, hand to the store.
