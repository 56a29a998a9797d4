//! Elastic Common Schema JSON, as Filebeat's Kafka output and the `ecs-logging` libraries write
//! it.
//!
//! Format (ECS reference, "Log fields" and "ECS logging"; Filebeat's Kafka output encodes
//! events with its `json` codec): `{"@timestamp":"…","message":"…","log":{"level":"info"},
//! "ecs":{"version":"8.11.0"},"host":{"name":"web-1"},"trace":{"id":"…"}}`. The loggers write
//! dotted keys flat (`"log.level":"info"`): both spellings are read by the same path
//! (`log.level`). Every ECS field is a field by its ECS name; `message` is the message.

use super::envelope::{Found, Key};

/// Where the message is.
pub(crate) const MESSAGE: &[Key] = &[Key::Message];

/// Every ECS event names its schema version (`ecs.version`, nested or dotted); an ordinary
/// JSON log with a `message` does not.
pub(crate) fn detect(f: &Found) -> bool {
    f.ecs_version && f.message_string
}
