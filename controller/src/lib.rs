//! artgen: Flux's ArtifactGenerator, rebuilt in Rust. This crate holds the `artgen` binary: the local CLI
//! (`build`, `validate`, `crds`) and the controller (`controller`); the build engine lives in `artgen-engine`.

pub mod cli;
pub mod context;
pub mod controller;
pub mod crd;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod reconcile;
pub mod server;
pub mod telemetry;
