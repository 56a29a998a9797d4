//! Docker's `json-file` logging driver: one JSON object per line of a container's output.
//!
//! Format (Docker's documentation of the driver, and `daemon/logger/jsonfilelog`):
//! `{"log":"GET / 200\n","stream":"stdout","time":"2026-11-26T22:00:00.123456789Z"}`; `log`
//! keeps the line's newline (dropped from the message), a line longer than 16 KiB is split over
//! several objects (the daemon's own limit; each is an event), and `attrs` holds labels when
//! the driver is asked for them. Fields: `stream`, `time`, `attrs.*` and `message`.

use super::envelope::{Found, Key};

/// Where the message is.
pub(crate) const MESSAGE: &[Key] = &[Key::Log];

/// `log` as a string beside `stream` and `time`, and no Kubernetes metadata (that is Fluent
/// Bit's or Vector's record, which may have kept Docker's keys).
pub(crate) fn detect(f: &Found) -> bool {
    f.log_string && f.stream && f.time && !f.kubernetes
}
