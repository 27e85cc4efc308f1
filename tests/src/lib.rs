//! Test harness shared by artgen's test suites. It depends on neither the engine nor the controller:
//! callers pass in what it needs.

pub mod archive;
pub mod cases;
#[cfg(feature = "control-plane")]
pub mod control_plane;
#[cfg(feature = "control-plane")]
pub mod fixtures;
pub mod plugins;
pub mod source_server;
pub mod table;
pub mod tree;
#[cfg(feature = "control-plane")]
pub mod wait;
