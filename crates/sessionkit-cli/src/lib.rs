//! The pieces of the `sessionkit` command, as a library so tests and benchmarks can use them
//! in-process: the demo web app, the server, the admin commands, the load generator and the
//! duration parser.

pub mod admin;
pub mod bench;
pub mod demo;
pub mod duration;
pub mod serve;
