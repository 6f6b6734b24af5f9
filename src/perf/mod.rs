//! Building blocks of `warren-perf` (declared with `#[path]` from
//! `src/bin/warren-perf.rs`; not part of the library).

pub mod client;
pub mod cpu;
pub mod declare;
pub mod floor;
pub mod footprint;
pub mod hist;
pub mod msg;
pub mod run;
pub mod stall;
pub mod uri;
