//! Copy operations (spec §3.4–3.10): each operation is planned completely against the tree as left by
//! the earlier ones, then applied.

use std::collections::BTreeMap;

use super::exclude::Excludes;
use super::pattern::{self, Glob};
use super::tree::{Conflict, Content, Node, StagedFile, Tree};
use super::walk::{Kind, Resolved, SourceTree, Unusable, Warnings};
use super::{CopyError, Scratch};
use crate::fetch::{self, ExtractMode, Limits, is_tarball_name};
use crate::spec::{ARTIFACT_PREFIX, CopyOperation, Strategy};

/// A parsed `from`/`to` pair (spec §3.2).
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub alias: &'a str,
    /// Lexically cleaned source path, "" for the alias root.
    pub path: String,
    pub is_glob: bool,
    pub trailing_slash: bool,
    /// Lexically cleaned destination, "" for the staging root.
    pub dest: String,
    pub to_is_dir: bool,
}

fn root_relative(cleaned: String) -> String {
    if cleaned == "." { String::new() } else { cleaned }
}

pub(crate) fn parse(op: &CopyOperation) -> Option<Parsed<'_>> {
    let rest = op.from.strip_prefix('@')?;
    let (alias, raw) = rest.split_once('/')?;
    let raw_dest = op.to.strip_prefix(ARTIFACT_PREFIX)?;
    let dest = root_relative(pattern::clean(raw_dest));
    Some(Parsed {
        alias,
        path: root_relative(pattern::clean(raw)),
        is_glob: pattern::is_glob(raw),
        trailing_slash: raw.ends_with('/'),
        to_is_dir: dest.is_empty() || raw_dest.ends_with('/'),
        dest,
    })
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `path` relative to `root` ("" = alias root); `path` is known to lie below it.
fn relative<'p>(path: &'p str, root: &str) -> &'p str {
    if root.is_empty() {
        path
    } else {
        path.strip_prefix(root)
            .map_or(path, |r| r.trim_start_matches('/'))
    }
}

enum Write {
    Dir(String),
    File(String, StagedFile),
    Merge {
        dest: String,
        file: StagedFile,
        shown: String,
    },
    Extract {
        dest: String,
        tarball: Content,
        shown: String,
    },
}

#[derive(Default)]
struct Plan {
    writes: Vec<Write>,
    /// Excludes removed at least one path (nothing-copied rule).
    excluded: bool,
    /// Regular files (Extract: tarballs) the plan writes.
    copied: usize,
}

struct Op<'a> {
    src: &'a SourceTree,
    parsed: Parsed<'a>,
    op: &'a CopyOperation,
    merge: bool,
}

impl Op<'_> {
    fn file_write(&self, dest: String, shown: &str, r: &Resolved) -> Write {
        let file = StagedFile {
            content: self.src.content(r),
            executable: r.executable,
        };
        if self.merge {
            Write::Merge {
                dest,
                file,
                shown: shown.to_owned(),
            }
        } else {
            Write::File(dest, file)
        }
    }

    /// Plans the recursive copy of directory `dir` (user-visible path `shown`) into `dest`.
    fn copy_dir(
        &self,
        dir: &Resolved,
        shown: &str,
        dest: &str,
        excludes: &Excludes,
        plan: &mut Plan,
        warnings: &mut Warnings,
    ) -> Result<(), CopyError> {
        plan.writes.push(Write::Dir(dest.to_owned()));
        let mut visit = |p: &str, r: &Resolved| {
            let is_dir = r.kind == Kind::Dir;
            if excludes.matching(p, is_dir).is_some() {
                plan.excluded = true;
                return Ok(false);
            }
            let d = join(dest, relative(p, shown));
            if is_dir {
                plan.writes.push(Write::Dir(d));
            } else {
                plan.copied += 1;
                plan.writes.push(self.file_write(d, p, r));
            }
            Ok(true)
        };
        self.src
            .walk(dir, shown, warnings, &mut visit)
            .map_err(|e| CopyError::io(shown, e))
    }

    fn plan_literal(&self, tree: &Tree, warnings: &mut Warnings) -> Result<Option<Plan>, CopyError> {
        let p = &self.parsed;
        let shown = if p.path.is_empty() { "." } else { p.path.as_str() };
        let resolved = match self.src.resolve(&p.path).map_err(|e| CopyError::io(shown, e))? {
            Ok(r) => r,
            Err(Unusable::Missing | Unusable::Escapes) if self.op.optional => return Ok(None),
            Err(Unusable::Missing | Unusable::Escapes) => {
                return Err(CopyError::DoesNotExist {
                    path: shown.to_owned(),
                });
            }
            Err(Unusable::Special) => {
                return Err(CopyError::Special {
                    path: shown.to_owned(),
                });
            }
        };
        let mut plan = Plan::default();
        match resolved.kind {
            Kind::Dir => {
                if self.op.strategy() == Strategy::Extract {
                    return Err(CopyError::ExtractDirectory {
                        path: shown.to_owned(),
                    });
                }
                let dest = if p.path.is_empty() {
                    p.dest.clone()
                } else {
                    join(&p.dest, basename(&p.path))
                };
                let excludes = Excludes::new(&self.op.exclude, &p.path).map_err(CopyError::Pattern)?;
                self.copy_dir(&resolved, &p.path, &dest, &excludes, &mut plan, warnings)?;
                if plan.excluded && plan.copied == 0 {
                    return self.all_excluded();
                }
            }
            Kind::File => {
                let excludes = Excludes::new(&self.op.exclude, "").map_err(CopyError::Pattern)?;
                if let Some(x) = excludes.matching(&p.path, false) {
                    if self.op.optional {
                        return Ok(None);
                    }
                    return Err(CopyError::Excluded {
                        path: p.path.clone(),
                        pattern: x.to_owned(),
                    });
                }
                let dest = if p.to_is_dir || tree.is_dir(&p.dest) {
                    join(&p.dest, basename(&p.path))
                } else {
                    p.dest.clone()
                };
                plan.copied = 1;
                plan.writes.push(if self.op.strategy() == Strategy::Extract {
                    Write::Extract {
                        dest: p.dest.clone(),
                        tarball: self.src.content(&resolved),
                        shown: p.path.clone(),
                    }
                } else {
                    self.file_write(dest, &p.path, &resolved)
                });
            }
        }
        Ok(Some(plan))
    }

    fn plan_glob(&self, warnings: &mut Warnings) -> Result<Option<Plan>, CopyError> {
        let p = &self.parsed;
        let pattern = if p.trailing_slash {
            format!("{}/", p.path)
        } else {
            p.path.clone()
        };
        let glob =
            Glob::new(&pattern).map_err(|e| CopyError::Pattern(format!("invalid glob pattern: {e}")))?;
        let root = pattern::selection_root(&p.path).to_owned();
        let excludes = Excludes::new(&self.op.exclude, &root).map_err(CopyError::Pattern)?;
        let extract = self.op.strategy() == Strategy::Extract;
        // Without `**` or braces a match can be at most as deep as the pattern.
        let max_depth = (!p.path.contains("**") && !p.path.contains('{')).then(|| p.path.split('/').count());

        let mut plan = Plan::default();
        let mut matched = false;
        let mut excluded_match = false;
        let start = match self.src.resolve(&root).map_err(|e| CopyError::io(&root, e))? {
            Ok(r) if r.kind == Kind::Dir => Some(r),
            _ => None,
        };
        if let Some(start) = start {
            let mut failure = None;
            let mut sub_warnings = Warnings::default();
            let mut visit = |path: &str, r: &Resolved| {
                let is_dir = r.kind == Kind::Dir;
                let is_match = glob.is_match(path) && (!glob.dirs_only() || is_dir);
                matched |= is_match;
                let deeper = is_dir && max_depth.is_none_or(|m| path.split('/').count() < m);
                if excludes.matching_with_ancestors(path, is_dir).is_some() {
                    // Only matches count as removed (Extract: only tarballs); keep looking below an
                    // excluded directory just until one excluded match is known.
                    if is_match && (!extract || is_tarball_name(path)) {
                        excluded_match = true;
                        plan.excluded = true;
                    }
                    return Ok(deeper && !excluded_match);
                }
                if !is_match {
                    return Ok(deeper);
                }
                let dest = join(&p.dest, relative(path, &root));
                if extract {
                    if is_tarball_name(path) {
                        if is_dir {
                            failure = Some(CopyError::TarballIsDirectory {
                                path: path.to_owned(),
                            });
                            return Ok(false);
                        }
                        plan.copied += 1;
                        let tarball = self.src.content(r);
                        plan.writes.push(Write::Extract {
                            dest: p.dest.clone(),
                            tarball,
                            shown: path.to_owned(),
                        });
                    }
                    return Ok(deeper);
                }
                if is_dir {
                    // Step 5: the recursive copy covers everything below.
                    let mut sub = Plan::default();
                    if let Err(e) = self.copy_dir(r, path, &dest, &excludes, &mut sub, &mut sub_warnings) {
                        failure = Some(e);
                    }
                    plan.excluded |= sub.excluded;
                    plan.copied += sub.copied;
                    plan.writes.extend(sub.writes);
                    Ok(false)
                } else {
                    plan.copied += 1;
                    plan.writes.push(self.file_write(dest, path, r));
                    Ok(false)
                }
            };
            self.src
                .walk(&start, &root, warnings, &mut visit)
                .map_err(|e| CopyError::io(&root, e))?;
            for w in sub_warnings.into_vec() {
                warnings.push(w);
            }
            if let Some(e) = failure {
                return Err(e);
            }
        }
        if !matched {
            if self.op.optional {
                return Ok(None);
            }
            return Err(CopyError::NoMatch {
                pattern: p.path.clone(),
                alias: self.src.alias.clone(),
            });
        }
        if plan.excluded && plan.copied == 0 {
            return self.all_excluded();
        }
        Ok(Some(plan))
    }

    fn all_excluded(&self) -> Result<Option<Plan>, CopyError> {
        if self.op.optional {
            return Ok(None);
        }
        Err(CopyError::AllExcluded {
            from: self.op.from.clone(),
            alias: self.src.alias.clone(),
        })
    }
}

fn conflict(c: Conflict) -> CopyError {
    match c {
        Conflict::IsDirectory(p) => CopyError::IsDirectory { path: p },
        Conflict::IsFile(p) => CopyError::IsFile { path: p },
    }
}

/// Everything one copy operation needs besides the operation itself.
pub struct Env<'a> {
    pub sources: &'a BTreeMap<String, SourceTree>,
    pub scratch: &'a Scratch,
    pub extract_limits: &'a Limits,
}

/// Plans and applies one copy operation to `tree`.
pub fn apply(
    op: &CopyOperation,
    env: &Env<'_>,
    tree: &mut Tree,
    warnings: &mut Warnings,
) -> Result<(), CopyError> {
    let parsed = parse(op).ok_or_else(|| CopyError::Pattern("malformed from/to".into()))?;
    let src = env
        .sources
        .get(parsed.alias)
        .ok_or_else(|| CopyError::UnknownAlias {
            alias: parsed.alias.to_owned(),
        })?;
    let op = Op {
        src,
        op,
        merge: op.strategy() == Strategy::Merge,
        parsed,
    };
    let plan = if op.parsed.is_glob {
        op.plan_glob(warnings)?
    } else {
        op.plan_literal(tree, warnings)?
    };
    let Some(plan) = plan else { return Ok(()) };
    for write in plan.writes {
        match write {
            Write::Dir(d) => tree.mkdir_all(&d).map_err(conflict)?,
            Write::File(d, f) => tree.put_file(&d, f).map_err(conflict)?,
            Write::Merge { dest, file, shown } => {
                let merged = match tree.get(&dest) {
                    None => file,
                    Some(Node::Dir(_)) => return Err(CopyError::IsDirectory { path: dest }),
                    Some(Node::File(base)) => {
                        let base_bytes = base.content.read_all().map_err(|e| CopyError::io(&dest, e))?;
                        let overlay = file.content.read_all().map_err(|e| CopyError::io(&shown, e))?;
                        let bytes = super::merge::merge(&base_bytes, &dest, &overlay, &shown)
                            .map_err(CopyError::Merge)?;
                        StagedFile {
                            content: Content::Bytes(bytes.into()),
                            executable: base.executable,
                        }
                    }
                };
                tree.put_file(&dest, merged).map_err(conflict)?;
            }
            Write::Extract { dest, tarball, shown } => {
                extract_into(tree, &dest, &tarball, &shown, env)?;
            }
        }
    }
    Ok(())
}

/// Unpacks one tarball into a fresh scratch directory and stages its entries below `dest`.
fn extract_into(
    tree: &mut Tree,
    dest: &str,
    tarball: &Content,
    shown: &str,
    env: &Env<'_>,
) -> Result<(), CopyError> {
    let extract_err = |source| CopyError::Extract {
        tarball: shown.to_owned(),
        source,
    };
    let (scratch, dir) = env.scratch.new_dir().map_err(|e| CopyError::io(shown, e))?;
    let reader = tarball.open().map_err(|e| CopyError::io(shown, e))?;
    fetch::extract::unpack(reader, &dir, ExtractMode::Extract, env.extract_limits).map_err(extract_err)?;
    tree.mkdir_all(dest).map_err(conflict)?;
    let unpacked = SourceTree::new(shown, dir);
    let root = Resolved {
        real: String::new(),
        kind: Kind::Dir,
        size: 0,
        executable: false,
    };
    let mut failure = None;
    let mut visit = |p: &str, r: &Resolved| {
        let d = join(dest, p);
        let result = if r.kind == Kind::Dir {
            tree.mkdir_all(&d)
        } else {
            tree.put_file(
                &d,
                StagedFile {
                    content: unpacked.content(r),
                    executable: r.executable,
                },
            )
        };
        if let Err(c) = result {
            failure = Some(conflict(c));
            return Ok(false);
        }
        Ok(true)
    };
    let mut ignored = Warnings::default();
    unpacked
        .walk(&root, "", &mut ignored, &mut visit)
        .map_err(|e| CopyError::io(&scratch, e))?;
    failure.map_or(Ok(()), Err)
}
