//! Extract: which rules apply to an event, and the field values they read.
pub mod matcher;
pub mod prefilter;
pub mod time;
pub mod trace;
pub mod value;
