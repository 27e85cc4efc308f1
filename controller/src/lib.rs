//! artgen: Flux's ArtifactGenerator, rebuilt in Rust. This crate holds the `artgen` binary's
//! subcommands; the build engine lives in `artgen-engine`.

pub mod cli;
pub mod crd;
pub mod server;
