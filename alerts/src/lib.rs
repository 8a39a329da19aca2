//! Alert lifecycle, grouping, escalation and notification channels.
