//! Sinks: where results leave the core. The exposition renders the registry; the writers in
//! `output` write kept events and dead letters.
pub mod exposition;
pub mod http;
pub mod kafka;
pub mod output;
pub mod playground;
