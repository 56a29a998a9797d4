//! The rule language: YAML rule files, their compilation and diagnostics.
pub mod compile;
pub mod diagnostic;
pub mod grok;
pub mod program;
pub mod read;
pub mod suggest;
pub mod testfile;
pub mod yaml;

pub use compile::{SourceFile, compile, load_paths};
pub use diagnostic::Diagnostic;
pub use program::Program;
