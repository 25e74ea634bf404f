//! The pieces of the `sessionkit` command that tests and benchmarks use in-process: the demo web
//! app and the duration parser.

pub mod demo;
pub mod duration;
