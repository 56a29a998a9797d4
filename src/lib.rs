//! logmill turns log events into Prometheus metrics, trace correlations and less log volume.
//!
//! The crate is the pipeline, one module per stage, in data-flow order:
//! `source → decode → extract → derive → reduce → sink`, with `rules` compiling the rule
//! files every stage is driven by. See `ARCHITECTURE.md` for the map.
pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod correlate;
pub mod decode;
pub mod derive;
pub mod engine;
pub mod extract;
pub mod reduce;
pub mod report;
pub mod rules;
pub mod service;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod workload;
