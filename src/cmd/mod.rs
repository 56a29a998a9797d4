//! The commands of the binary; each is the edge where library errors become `anyhow`.
pub mod evaluate;
pub mod explain;
pub mod playground;
pub mod replay;
pub mod ruletest;
pub mod sample;
pub mod service;
pub mod shadow;
pub mod suggest;
pub mod templates;
