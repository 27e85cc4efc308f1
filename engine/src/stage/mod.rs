//! Staging: applies the copy operations of one artifact, in spec order, to a virtual tree (spec §3).
//!
//! Every source is read through its own capability handle and every artifact gets its own tree, so
//! sources and artifacts never share a directory whatever their names (spec §3.1).

pub mod copy;
pub mod exclude;
pub mod merge;
pub mod path_pattern;
pub mod pattern;
pub mod tree;
pub mod walk;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

pub use copy::Env;
pub use tree::{Content, Node, StagedFile, Tree};
pub use walk::{SourceTree, Warnings};

use crate::error::{Error, Result};
use crate::spec::OutputArtifact;

/// Why one copy operation failed. The crate error adds the artifact, operation index and from/to.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source '{path}' does not exist")]
    DoesNotExist { path: String },
    #[error("source '{path}' is not a regular file or directory")]
    Special { path: String },
    #[error("source '{path}' is excluded by pattern '{pattern}'")]
    Excluded { path: String, pattern: String },
    #[error("no files match pattern '{pattern}' in source '{alias}'")]
    NoMatch { pattern: String, alias: String },
    #[error("all files matching '{from}' in source '{alias}' were excluded")]
    AllExcluded { from: String, alias: String },
    #[error("destination '{path}' is a directory")]
    IsDirectory { path: String },
    #[error("destination '{path}' is a file")]
    IsFile { path: String },
    #[error("extract strategy is not supported for directories, got '{path}'")]
    ExtractDirectory { path: String },
    #[error("'{path}' is a directory, not a tarball")]
    TarballIsDirectory { path: String },
    #[error("failed to extract tarball '{tarball}'")]
    Extract {
        tarball: String,
        #[source]
        source: crate::fetch::FetchError,
    },
    #[error(transparent)]
    Merge(#[from] merge::MergeError),
    #[error("source alias '{alias}' not found")]
    UnknownAlias { alias: String },
    #[error("{0}")]
    Pattern(String),
    #[error("'{path}'")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl CopyError {
    pub(crate) fn io(path: &str, source: io::Error) -> Self {
        CopyError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Private scratch space of one build (extracted tarballs). Removed with the build.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    dir: Dir,
    next: AtomicUsize,
}

impl Scratch {
    pub fn new(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        Ok(Scratch {
            path: path.to_owned(),
            dir,
            next: AtomicUsize::new(0),
        })
    }

    /// A fresh empty directory: its name (for messages) and handle.
    pub fn new_dir(&self) -> io::Result<(String, Dir)> {
        let name = format!("x{}", self.next.fetch_add(1, Ordering::Relaxed));
        self.dir.create_dir(&name)?;
        Ok((
            self.path.join(&name).display().to_string(),
            self.dir.open_dir(&name)?,
        ))
    }
}

/// Stages one artifact: all its copy operations, in order, into a fresh tree.
pub fn stage(artifact: &OutputArtifact, env: &Env<'_>, warnings: &mut Warnings) -> Result<Tree> {
    let mut tree = Tree::default();
    for (index, op) in artifact.copy.iter().enumerate() {
        copy::apply(op, env, &mut tree, warnings).map_err(|source| Error::Copy {
            artifact: artifact.name.clone(),
            index,
            from: op.from.clone(),
            to: op.to.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(tree)
}

/// Opens a local directory (a CLI `--source` or an unpacked tarball) as a source tree.
pub fn open_source(alias: &str, path: &Path) -> io::Result<SourceTree> {
    Ok(SourceTree {
        alias: alias.to_owned(),
        root: Arc::new(Dir::open_ambient_dir(path, ambient_authority())?),
    })
}
