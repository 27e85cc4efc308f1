//! One build of a generator: fetch every source, expand pathPattern, stage and pack every artifact.
//! Nothing is published here: the caller gets finished archives in a private temp dir and decides
//! (all artifacts are built before any is written, spec §9.2 step 12 and §12.1).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fetch::{self, ExtractMode, HttpOptions, Limits};
use crate::pack::{ArchiveWriter, PackOptions, Packed};
use crate::spec::{ArtifactGeneratorSpec, CopyOperation, Manifest, OutputArtifact};
use crate::stage::path_pattern::{self, PathPattern};
use crate::stage::{self, Env, Scratch, SourceTree, Tree, Warnings};
use crate::transform::{self, TransformContext, TransformReport};
use crate::validate;

/// Labels that only the controller sets on ExternalArtifacts (spec §8.1).
pub const CONTROLLER_LABELS: [&str; 2] = [
    "app.kubernetes.io/managed-by",
    "source.extensions.fluxcd.io/generator",
];

/// Where a source's bytes come from.
#[derive(Clone, Debug)]
pub enum SourceInput {
    /// A local directory, used in place and read-only.
    Dir(PathBuf),
    /// A local `.tar.gz`/`.tgz`, unpacked with the source rules (spec §4).
    Tarball(PathBuf),
    /// An `http(s)://` URL, optionally ending in `#sha256:<hex>`.
    Url(String),
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub source_limits: Limits,
    pub extract_limits: Limits,
    pub http: HttpOptions,
    pub pack: PackOptions,
    /// Parent of the build's private temp dir (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
    /// The plugin host and its admission; without it a spec with transforms is refused.
    pub transforms: Option<Transforms>,
}

/// What running `transforms:` needs (design/plugins.md §5).
#[derive(Clone, Debug)]
pub struct Transforms {
    pub host: Arc<transform::Host>,
    pub admission: transform::Admission,
    /// `--plugin-file <transform>=<path>`: the plugin of that transform name is read from this file
    /// instead of its source alias (CLI dev loop).
    pub plugin_files: BTreeMap<String, PathBuf>,
    /// `context.sources` metadata per alias (kind, digest); revisions come from the build input.
    pub source_kinds: BTreeMap<String, (String, String)>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            source_limits: Limits::for_mode(ExtractMode::Source),
            extract_limits: Limits::for_mode(ExtractMode::Extract),
            http: HttpOptions::default(),
            pack: PackOptions::default(),
            work_dir: None,
            transforms: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BuildInput {
    pub manifest: Manifest,
    pub sources: BTreeMap<String, SourceInput>,
    /// `status.artifact.revision` per alias; default `local@sha256:<hex>` (spec §12.1).
    pub revisions: BTreeMap<String, String>,
    /// Origin revision metadata per alias; default none (falls back to the revision, spec §7).
    pub origin_revisions: BTreeMap<String, String>,
    pub options: BuildOptions,
}

#[derive(Clone, Debug)]
pub struct BuiltArtifact {
    pub name: String,
    pub revision: String,
    pub digest: String,
    pub size: u64,
    pub origin_revision: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The finished archive inside the build's temp dir.
    pub file: PathBuf,
    /// One report per transform step, in order.
    pub transforms: Vec<TransformReport>,
}

#[derive(Debug)]
pub struct BuildOutput {
    pub artifacts: Vec<BuiltArtifact>,
    pub warnings: Vec<String>,
    pub timings: Timings,
    _tmp: tempfile::TempDir,
}

/// Time spent per build stage, summed over the artifacts (the controller's stage histograms).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub fetch: Duration,
    pub stage: Duration,
    pub transform: Duration,
    pub pack: Duration,
}

impl BuildOutput {
    /// Moves every archive to `<out>/<name>.tar.gz` (creating `out`), each through a temporary name so
    /// a reader never sees a partial file. Other files in `out` are left alone.
    pub fn write_to(&self, out: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(out)?;
        self.artifacts
            .iter()
            .map(|a| {
                let target = out.join(format!("{}.tar.gz", a.name));
                let tmp = out.join(format!(".{}.tar.gz.tmp", a.name));
                if std::fs::rename(&a.file, &tmp).is_err() {
                    std::fs::copy(&a.file, &tmp)?;
                }
                std::fs::rename(&tmp, &target)?;
                Ok(target)
            })
            .collect()
    }
}

/// Every alias the spec reads: copies, revisions, pathPattern and transforms (spec §12.1).
pub fn referenced_aliases(spec: &ArtifactGeneratorSpec) -> BTreeSet<String> {
    let alias = |s: &str| {
        s.strip_prefix('@')
            .map(|a| a.split('/').next().unwrap_or(a).to_owned())
    };
    let mut out: BTreeSet<String> = spec.path_pattern.iter().filter_map(|p| alias(p)).collect();
    for art in &spec.artifacts {
        out.extend(art.copy.iter().filter_map(|op| alias(&op.from)));
        out.extend(
            art.revision
                .iter()
                .chain(&art.origin_revision)
                .filter_map(|r| alias(r)),
        );
        for t in &art.transforms {
            out.insert(t.plugin.source.alias.clone());
            out.extend(t.read_sources.iter().cloned());
        }
    }
    out
}

struct Fetched {
    tree: SourceTree,
    /// Where the tree is on disk (mounted read-only for transforms that ask for it).
    path: PathBuf,
    /// `local@sha256:…` of the downloaded or local tarball; None for directories (computed on demand).
    revision: Option<String>,
    /// Keeps a downloaded tree alive for the build.
    _dir: Option<tempfile::TempDir>,
}

async fn fetch_source(
    alias: &str,
    input: &SourceInput,
    tmp: &Path,
    opts: &BuildOptions,
    client: &OnceLock<reqwest::Client>,
) -> Result<Fetched> {
    let source_err = |source| Error::Source {
        alias: alias.to_owned(),
        source: Box::new(source),
    };
    let io_err = |e| Error::io(format!("source '{alias}'"), e);
    match input {
        SourceInput::Dir(path) => Ok(Fetched {
            tree: stage::open_source(alias, path).map_err(io_err)?,
            path: path.clone(),
            revision: None,
            _dir: None,
        }),
        SourceInput::Tarball(path) => {
            let dest = tmp.join(format!("src-{alias}"));
            let (path, limits) = (path.clone(), opts.source_limits.clone());
            let unpacked = tokio::task::spawn_blocking({
                let dest = dest.clone();
                move || {
                    let work = |e| fetch::FetchError::io("creating work directory", e);
                    std::fs::create_dir(&dest).map_err(work)?;
                    let dir = cap_std::fs::Dir::open_ambient_dir(&dest, cap_std::ambient_authority())
                        .map_err(work)?;
                    fetch::unpack_file(&path, &dir, ExtractMode::Source, &limits)
                }
            })
            .await
            .map_err(|e| Error::io("unpacking", io::Error::other(e)))?
            .map_err(source_err)?;
            Ok(Fetched {
                tree: stage::open_source(alias, &dest).map_err(io_err)?,
                path: dest.clone(),
                revision: Some(format!("local@{}", unpacked.digest)),
                _dir: None,
            })
        }
        SourceInput::Url(url) => {
            let (url, pin) = fetch::split_pin(url).map_err(source_err)?;
            let (unpacked, dir) = fetch::http::fetch(
                client.get_or_init(fetch::http::client),
                url,
                pin,
                tmp,
                ExtractMode::Source,
                &opts.source_limits,
                &opts.http,
            )
            .await
            .map_err(source_err)?;
            Ok(Fetched {
                tree: stage::open_source(alias, dir.path()).map_err(io_err)?,
                path: dir.path().to_owned(),
                revision: Some(format!("local@{}", unpacked.digest)),
                _dir: Some(dir),
            })
        }
    }
}

/// Builds every artifact of the manifest. Validation runs first, exactly like `artgen validate`.
pub async fn build(input: BuildInput) -> Result<BuildOutput> {
    let BuildInput {
        manifest,
        sources,
        revisions,
        origin_revisions,
        options,
    } = input;
    let namespace = manifest
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = manifest.spec;
    let manifest_name = manifest.metadata.name.clone();
    validate::validate(&spec, &namespace, &validate::Options::default())?;
    if let Some(art) = spec.artifacts.iter().find(|a| !a.transforms.is_empty())
        && options.transforms.is_none()
    {
        return Err(Error::TransformsUnsupported {
            artifact: art.name.clone(),
        });
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("artgen-build-");
    let tmp = match &options.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("creating build directory", e))?;

    // Built on first use: loading the system's CA certificates costs ~10 ms, wasted on a build whose
    // sources are all local (every controller build: it hands the engine its cached directories).
    let client = OnceLock::new();
    let fetch_started = Instant::now();
    let referenced = referenced_aliases(&spec);
    let mut fetched = BTreeMap::new();
    let jobs = sources
        .iter()
        .filter(|(alias, _)| referenced.contains(*alias))
        .map(|(alias, input)| {
            let (tmp, options, client) = (tmp.path(), &options, &client);
            async move {
                fetch_source(alias, input, tmp, options, client)
                    .await
                    .map(|f| (alias.clone(), f))
            }
        });
    for (alias, f) in futures_util::future::try_join_all(jobs).await? {
        fetched.insert(alias, f);
    }
    if let Some(missing) = referenced.iter().find(|a| !fetched.contains_key(*a)) {
        return Err(Error::invalid(
            "sources",
            format!("no input given for source alias '{missing}'"),
        ));
    }

    let fetch_time = fetch_started.elapsed();
    let tmp_path = tmp.path().to_owned();
    let (artifacts, warnings, mut timings) = tokio::task::spawn_blocking(move || {
        build_blocking(
            &spec,
            (&manifest_name, &namespace),
            &fetched,
            &revisions,
            &origin_revisions,
            &options,
            &tmp_path,
        )
    })
    .await
    .map_err(|e| Error::io("building", io::Error::other(e)))??;
    timings.fetch = fetch_time;
    Ok(BuildOutput {
        artifacts,
        warnings,
        timings,
        _tmp: tmp,
    })
}

fn build_blocking(
    spec: &ArtifactGeneratorSpec,
    (generator, namespace): (&str, &str),
    fetched: &BTreeMap<String, Fetched>,
    revisions: &BTreeMap<String, String>,
    origin_revisions: &BTreeMap<String, String>,
    options: &BuildOptions,
    tmp: &Path,
) -> Result<(Vec<BuiltArtifact>, Vec<String>, Timings)> {
    let mut warnings = Warnings::default();
    let mut timings = Timings::default();
    let trees: BTreeMap<String, SourceTree> =
        fetched.iter().map(|(a, f)| (a.clone(), f.tree.clone())).collect();
    let scratch =
        Scratch::new(&tmp.join("scratch")).map_err(|e| Error::io("creating scratch directory", e))?;
    let env = Env {
        sources: &trees,
        scratch: &scratch,
        extract_limits: &options.extract_limits,
    };

    let expanded = expand(spec, &trees)?;
    let out_dir = tmp.join("out");
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io("creating output directory", e))?;

    let mut revision_cache: BTreeMap<String, String> = BTreeMap::new();
    let mut revision_of = |alias: &str, warnings: &mut Warnings| -> Result<String> {
        if let Some(r) = revisions.get(alias).or_else(|| revision_cache.get(alias)) {
            return Ok(r.clone());
        }
        let f = &fetched[alias];
        let rev = match &f.revision {
            Some(r) => r.clone(),
            None => format!(
                "local@{}",
                directory_digest(alias, &env, options, warnings)?.digest
            ),
        };
        revision_cache.insert(alias.to_owned(), rev.clone());
        Ok(rev)
    };

    let mut built = Vec::with_capacity(expanded.len());
    for (i, (art, capture_labels)) in expanded.iter().enumerate() {
        let started = Instant::now();
        let mut tree = stage::stage(art, &env, &mut warnings)?;
        let mut staged = Instant::now();
        timings.stage += staged - started;
        let mut reports = Vec::new();
        if let (false, Some(rt)) = (art.transforms.is_empty(), &options.transforms) {
            let ctx = TransformContext {
                namespace: namespace.to_owned(),
                generator: generator.to_owned(),
                artifact: art.name.clone(),
                labels: capture_labels.clone(),
                sources: spec
                    .sources
                    .iter()
                    .map(|s| {
                        let (kind, digest) = rt
                            .source_kinds
                            .get(&s.alias)
                            .cloned()
                            .unwrap_or_else(|| (s.kind.as_str().to_owned(), String::new()));
                        transform::SourceInfo {
                            alias: s.alias.clone(),
                            kind,
                            revision: revisions.get(&s.alias).cloned().unwrap_or_default(),
                            digest,
                        }
                    })
                    .collect(),
            };
            let work = tmp.join(format!("work-{i}"));
            reports = run_transforms(art, &tree, &work, fetched, rt, &ctx, &mut warnings)?;
            tree = tree_of_dir(art, &work, &env, &mut warnings)?;
            let done = Instant::now();
            timings.transform += done - staged;
            staged = done;
        }
        let file = out_dir.join(format!("{i}.tar.gz"));
        let packed = pack_to_file(&tree, &file, &options.pack).map_err(|source| Error::Pack {
            artifact: art.name.clone(),
            what: "writing archive",
            source,
        })?;
        timings.pack += staged.elapsed();
        let revision = match &art.revision {
            Some(r) => revision_of(alias_of(r), &mut warnings)?,
            None => format!("latest@{}", packed.digest),
        };
        let origin_revision = match &art.origin_revision {
            Some(r) => {
                let alias = alias_of(r);
                Some(match origin_revisions.get(alias) {
                    Some(o) => o.clone(),
                    None => revision_of(alias, &mut warnings)?,
                })
            }
            None => None,
        };
        let mut labels = spec
            .common_metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        labels.extend(capture_labels.clone());
        labels.retain(|k, _| !CONTROLLER_LABELS.contains(&k.as_str()));
        built.push(BuiltArtifact {
            name: art.name.clone(),
            revision,
            digest: packed.digest,
            size: packed.size,
            origin_revision,
            labels,
            file,
            transforms: reports,
        });
    }
    Ok((built, warnings.into_vec(), timings))
}

/// Writes the staged tree to `work`, runs the artifact's transforms over it and returns their reports; step
/// warnings (and ignored failures) go to `warnings`.
fn run_transforms(
    art: &OutputArtifact,
    tree: &Tree,
    work: &Path,
    fetched: &BTreeMap<String, Fetched>,
    rt: &Transforms,
    ctx: &TransformContext,
    warnings: &mut Warnings,
) -> Result<Vec<TransformReport>> {
    let io_err = |e| Error::Pack {
        artifact: art.name.clone(),
        what: "writing the tree for transforms",
        source: e,
    };
    std::fs::create_dir(work).map_err(io_err)?;
    let dir = cap_std::fs::Dir::open_ambient_dir(work, cap_std::ambient_authority()).map_err(io_err)?;
    tree.write_into(&dir).map_err(io_err)?;
    let sources: BTreeMap<String, PathBuf> = fetched
        .iter()
        .map(|(alias, f)| (alias.clone(), f.path.clone()))
        .collect();
    let plugin_bytes = |t: &crate::spec::Transform| -> io::Result<Vec<u8>> {
        if let Some(file) = rt.plugin_files.get(&t.name) {
            return std::fs::read(file);
        }
        let source = fetched.get(&t.plugin.source.alias).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("source alias '{}' not fetched", t.plugin.source.alias),
            )
        })?;
        transform::read_plugin(&source.path, &t.plugin.source.path)
    };
    let reports = rt
        .host
        .run_all(work, &art.transforms, plugin_bytes, ctx, &sources, &rt.admission)?;
    for r in &reports {
        for d in r
            .diagnostics
            .iter()
            .filter(|d| d.severity != transform::Severity::Info)
        {
            warnings.push(format!(
                "artifact \"{}\" transform {}: {}",
                art.name, r.name, d.message
            ));
        }
        if r.result == transform::TransformResult::Ignored {
            warnings.push(format!(
                "artifact \"{}\" transform {} ignored: {}",
                art.name, r.name, r.message
            ));
        }
    }
    Ok(reports)
}

/// The staged tree again, from the directory the transforms left (already validated and normalised by the
/// host): every file below `work`, walked like a source.
fn tree_of_dir(art: &OutputArtifact, work: &Path, env: &Env<'_>, warnings: &mut Warnings) -> Result<Tree> {
    const ALIAS: &str = "transformed";
    let tree =
        stage::open_source(ALIAS, work).map_err(|e| Error::io(format!("artifact \"{}\"", art.name), e))?;
    let trees = BTreeMap::from([(ALIAS.to_owned(), tree)]);
    let whole = OutputArtifact {
        name: art.name.clone(),
        copy: vec![CopyOperation {
            from: format!("@{ALIAS}/"),
            to: "@artifact/".into(),
            optional: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let env = Env {
        sources: &trees,
        scratch: env.scratch,
        extract_limits: env.extract_limits,
    };
    stage::stage(&whole, &env, warnings)
}

fn alias_of(reference: &str) -> &str {
    reference.trim_start_matches('@')
}

/// The artifacts to build: the spec's, or the pathPattern expansion (spec §6) with capture labels.
pub fn expand(
    spec: &ArtifactGeneratorSpec,
    trees: &BTreeMap<String, SourceTree>,
) -> Result<Vec<(OutputArtifact, BTreeMap<String, String>)>> {
    let Some(pattern) = spec.path_pattern.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(spec
            .artifacts
            .iter()
            .map(|a| (a.clone(), BTreeMap::new()))
            .collect());
    };
    let pp_err = |message| Error::PathPattern { message };
    let pp = PathPattern::parse(pattern).map_err(pp_err)?;
    let tree = trees.get(&pp.alias).ok_or_else(|| {
        pp_err(format!(
            "pathPattern \"{pattern}\": source alias {} not found in local sources",
            pp.alias
        ))
    })?;
    let matches = path_pattern::discover(&tree.root, &pp)
        .map_err(|e| Error::io(format!("failed to walk source directory of '{}'", pp.alias), e))?;
    let expanded = path_pattern::expand(&pp, &spec.artifacts, &matches).map_err(pp_err)?;
    Ok(expanded.into_iter().map(|e| (e.artifact, e.labels)).collect())
}

/// Digest of a local directory packed in archive format v1: its default revision (spec §12.1).
fn directory_digest(
    alias: &str,
    env: &Env<'_>,
    options: &BuildOptions,
    warnings: &mut Warnings,
) -> Result<Packed> {
    let whole = OutputArtifact {
        name: format!("source '{alias}'"),
        copy: vec![CopyOperation {
            from: format!("@{alias}/"),
            to: "@artifact/".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tree = stage::stage(&whole, env, warnings)?;
    let mut writer = ArchiveWriter::new(io::sink(), &options.pack);
    let io_err = |e| Error::io(format!("hashing source '{alias}'"), e);
    tree.pack_into(&mut writer).map_err(io_err)?;
    Ok(writer.finish().map_err(io_err)?.1)
}

/// Streams a staged tree into a new archive file.
pub fn pack_to_file(tree: &Tree, path: &Path, opts: &PackOptions) -> io::Result<Packed> {
    let file = File::create(path)?;
    let mut writer = ArchiveWriter::new(file, opts);
    tree.pack_into(&mut writer)?;
    Ok(writer.finish()?.1)
}
