//! `artgen validate` (spec §12.2).

use std::path::PathBuf;

use artgen_engine::{spec, validate};

use super::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ArtifactGenerator manifest.
    #[arg(short = 'f', long = "file", value_name = "GENERATOR.YAML")]
    pub file: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let manifest = load(&args.file)?;
    let ns = manifest.metadata.namespace.as_deref().unwrap_or("default");
    validate::validate(&manifest.spec, ns, &validate::Options::default())
        .map_err(|e| Failure::failed(artgen_engine::chain(&e)))?;
    println!("{}: valid", args.file.display());
    Ok(())
}

/// Reads and parses a manifest: unreadable → usage error, invalid → failure naming the field.
pub fn load(path: &std::path::Path) -> Result<spec::Manifest, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read manifest {}: {e}", path.display())))?;
    let manifest =
        spec::parse_manifest(&text).map_err(|e| Failure::failed(format!("{}: {e}", path.display())))?;
    if manifest.api_version != spec::API_VERSION || manifest.kind != spec::KIND {
        return Err(Failure::failed(format!(
            "{}: expected apiVersion {} and kind {}, got {} {}",
            path.display(),
            spec::API_VERSION,
            spec::KIND,
            manifest.api_version,
            manifest.kind
        )));
    }
    Ok(manifest)
}
