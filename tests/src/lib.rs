//! Test harness shared by artgen's test suites. It depends on neither the engine nor the controller:
//! callers pass in what it needs.

pub mod cases;
