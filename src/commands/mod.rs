//! The headless commands. Each function writes its report to the writer it is given and
//! returns an error (one line, naming the file, line and field where there is one) for the
//! binary to print and exit non-zero on.

pub mod adapters;
pub mod chat;
pub mod data;
pub mod dedupe;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod models;
pub mod seeds;
pub mod serve;
pub mod train;
