//! Reading a source tree through its capability handle, with the symlink rules of spec §3.11.
//!
//! A symlink whose target stays inside the alias root behaves exactly like its target at the link's
//! path; absolute, escaping, dangling and cyclic links are skipped with a warning. Resolution is
//! lexical over the link contents and every hop is re-checked, so nothing outside the root is read.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use cap_std::fs::{Dir, Metadata};

use super::tree::Content;

/// Symlink hops allowed while resolving one path (as Linux' MAXSYMLINKS).
const MAX_HOPS: usize = 40;

/// Warnings collected during a build (printed by the CLI as `warning: …`, logged by the controller), each
/// once, in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Warnings {
    list: Vec<String>,
    /// Deduplication in constant time: a source tarball may hold up to `max_entries` (100,000 by default)
    /// skipped links, and a scan of the list per warning would make that quadratic.
    seen: HashSet<String>,
}

impl Warnings {
    pub fn push(&mut self, msg: String) {
        if !self.seen.contains(&msg) {
            self.seen.insert(msg.clone());
            self.list.push(msg);
        }
    }

    pub fn into_vec(self) -> Vec<String> {
        self.list
    }

    pub fn as_slice(&self) -> &[String] {
        &self.list
    }
}

/// One source, unpacked or used in place, opened as a capability handle.
#[derive(Clone, Debug)]
pub struct SourceTree {
    pub alias: String,
    pub root: Arc<Dir>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// An entry as seen through symlinks: `real` is its symlink-free path below the root.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub real: String,
    pub kind: Kind,
    pub size: u64,
    pub executable: bool,
}

/// Why a path cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Escapes,
    Special,
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

fn classify(md: &Metadata) -> Option<(Kind, u64, bool)> {
    use cap_std::fs::PermissionsExt;
    let ft = md.file_type();
    if ft.is_dir() {
        Some((Kind::Dir, 0, false))
    } else if ft.is_file() {
        Some((Kind::File, md.len(), md.permissions().mode() & 0o111 != 0))
    } else {
        None
    }
}

fn not_found(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

impl SourceTree {
    pub fn new(alias: impl Into<String>, root: Dir) -> Self {
        SourceTree {
            alias: alias.into(),
            root: Arc::new(root),
        }
    }

    pub fn content(&self, resolved: &Resolved) -> Content {
        Content::File {
            dir: self.root.clone(),
            path: resolved.real.clone(),
            size: resolved.size,
        }
    }

    /// Resolves an alias-relative path (which may pass through symlinks) to its real entry.
    pub fn resolve(&self, path: &str) -> io::Result<Result<Resolved, Unusable>> {
        let mut stack: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    if stack.pop().is_none() {
                        return Ok(Err(Unusable::Escapes));
                    }
                    continue;
                }
                _ => {}
            }
            stack.push(c);
            let p = stack.join("/");
            let md = match self.root.symlink_metadata(&p) {
                Ok(md) => md,
                Err(e) if not_found(&e) => return Ok(Err(Unusable::Missing)),
                Err(e) => return Err(e),
            };
            if md.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_HOPS {
                    return Ok(Err(Unusable::Missing));
                }
                let target = self.root.read_link_contents(&p)?;
                stack.pop();
                let Some(target) = target.to_str() else {
                    return Ok(Err(Unusable::Missing));
                };
                if target.starts_with('/') {
                    return Ok(Err(Unusable::Escapes));
                }
                pending.extend(target.split('/').rev().map(str::to_owned));
            } else if !pending.iter().all(|c| c.is_empty() || c == ".") && !md.is_dir() {
                // A file in the middle of the path.
                return Ok(Err(Unusable::Missing));
            }
        }
        let real = stack.join("/");
        let md = if real.is_empty() {
            self.root.dir_metadata()?
        } else {
            self.root.symlink_metadata(&real)?
        };
        Ok(match classify(&md) {
            Some((kind, size, executable)) => Ok(Resolved {
                real,
                kind,
                size,
                executable,
            }),
            None => Err(Unusable::Special),
        })
    }

    /// Walks below the directory at `start` (a path as the user sees it, through links), depth-first in
    /// walk order. `visit` gets the user-visible path and the resolved entry and returns whether to
    /// descend into a directory. Skipped links and special files become warnings.
    pub fn walk(
        &self,
        start: &Resolved,
        start_path: &str,
        warnings: &mut Warnings,
        visit: &mut dyn FnMut(&str, &Resolved) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut ancestors = vec![start.real.clone()];
        self.walk_dir(&start.real, start_path, &mut ancestors, warnings, visit)
    }

    fn walk_dir(
        &self,
        real: &str,
        shown: &str,
        ancestors: &mut Vec<String>,
        warnings: &mut Warnings,
        visit: &mut dyn FnMut(&str, &Resolved) -> io::Result<bool>,
    ) -> io::Result<()> {
        let entries = if real.is_empty() {
            self.root.entries()?
        } else {
            self.root.read_dir(real)?
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {:?} in '{}' is not valid UTF-8", name, join(shown, "")),
                ));
            };
            // Everything but a symlink is stat'ed through the open directory (`fstatat` on its handle), not
            // by a path resolved again from the root: one syscall per entry instead of three.
            let md = if entry.file_type()?.is_symlink() {
                None
            } else {
                Some(entry.metadata()?)
            };
            children.push((name.to_owned(), md));
        }
        children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (name, md) in children {
            let child_real = join(real, &name);
            let child_shown = join(shown, &name);
            let resolved = if let Some(md) = md {
                match classify(&md) {
                    Some((kind, size, executable)) => Resolved {
                        real: child_real,
                        kind,
                        size,
                        executable,
                    },
                    None => {
                        warnings.push(skip_message(&self.alias, &child_shown, Unusable::Special));
                        continue;
                    }
                }
            } else {
                match self.resolve(&child_real)? {
                    Ok(r) => r,
                    Err(why) => {
                        warnings.push(skip_message(&self.alias, &child_shown, why));
                        continue;
                    }
                }
            };
            if resolved.kind == Kind::Dir
                && ancestors
                    .iter()
                    .any(|a| a == &resolved.real || is_below(a, &resolved.real))
            {
                warnings.push(format!(
                    "skipping symlink '{}' in source '{}': it points to a directory on its own path (cycle)",
                    child_shown, self.alias
                ));
                continue;
            }
            let descend = visit(&child_shown, &resolved)?;
            if descend && resolved.kind == Kind::Dir {
                ancestors.push(resolved.real.clone());
                let r = self.walk_dir(&resolved.real, &child_shown, ancestors, warnings, visit);
                ancestors.pop();
                r?;
            }
        }
        Ok(())
    }
}

/// True when `ancestor` (a real path on the walk stack) lies below `target`: descending into `target`
/// would walk the ancestor again.
fn is_below(ancestor: &str, target: &str) -> bool {
    target.is_empty()
        || ancestor
            .strip_prefix(target)
            .is_some_and(|rest| rest.starts_with('/'))
}

pub fn skip_message(alias: &str, path: &str, why: Unusable) -> String {
    let reason = match why {
        Unusable::Missing => "target does not exist",
        Unusable::Escapes => "target escapes the source root",
        Unusable::Special => "not a regular file or directory",
    };
    match why {
        Unusable::Special => format!("skipping '{path}' in source '{alias}': {reason}"),
        _ => format!("skipping symlink '{path}' in source '{alias}': {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_keep_first_seen_order_once_each() {
        let mut w = Warnings::default();
        for msg in ["b", "a", "b", "c", "a"] {
            w.push(msg.to_owned());
        }
        assert_eq!(w.as_slice(), ["b", "a", "c"]);
        // As many as a tarball at the default entry limit can produce, each repeated once.
        let mut w = Warnings::default();
        for round in 0..2 {
            for i in 0..100_000 {
                w.push(skip_message("repo", &format!("links/l{i}"), Unusable::Escapes));
            }
            assert_eq!(w.as_slice().len(), 100_000, "round {round}");
        }
        let all = w.into_vec();
        assert_eq!(
            all[0],
            "skipping symlink 'links/l0' in source 'repo': target escapes the source root"
        );
        assert!(all[99_999].contains("'links/l99999'"));
    }
}
