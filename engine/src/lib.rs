//! artgen's build engine: turns an ArtifactGenerator spec plus source trees into byte-reproducible
//! tar.gz artifacts. The data flow is `fetch → stage → (transform) → pack`; the controller and the CLI
//! both drive it through [`build`]. This crate never depends on Kubernetes.

pub mod error;
pub mod fetch;
pub mod pack;
pub mod spec;
pub mod stage;
pub mod store;
pub mod transform;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
mod build;

pub use build::{
    BuildInput, BuildOptions, BuildOutput, BuiltArtifact, CONTROLLER_LABELS, SourceInput, Timings,
    Transforms, build, expand, pack_to_file, referenced_aliases,
};
pub use error::chain;
