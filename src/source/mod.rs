//! Sources: where records come from. `file` reads files and stdin for replay, cut into chunks
//! at line boundaries so workers can run in parallel and outputs can be put back in order;
//! `kafka` is the consumer group the service reads from.
pub mod file;
pub mod kafka;
