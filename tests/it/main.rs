//! The one integration test binary: every test here runs the real `logmill` binary.
mod cases;
mod cli;
mod deploy;
mod grok;
mod loghub;
mod peers;
mod playground;
mod reduction;
mod service;
mod support;
mod templates;
mod traces;
