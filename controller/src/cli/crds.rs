//! `artgen crds` (spec §12.4): the CRDs artgen owns, as YAML for `kubectl apply -f -`. Source-controller's
//! ExternalArtifact CRD is not printed: artgen only writes objects of that kind.

use super::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(Args {}: Args) -> Result<(), Failure> {
    let yaml = crate::crd::crds_yaml().map_err(|e| Failure::failed(format!("rendering the CRDs: {e}")))?;
    print!("{yaml}");
    Ok(())
}
