//! Deterministic file-system helpers.
//!
//! `read_dir` order is whatever the host file system returns, and it differs between nodes and between the
//! test's forward and reverse staging (design §9). Every plugin that visits more than one file must visit them
//! through [`walk_sorted`].

use std::ffi::OsString;
use std::fs::FileType;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The staged artifact tree, read-write.
pub const WORK: &str = "/work";

/// Regular files under `root`, as paths relative to `root`, sorted bytewise component by component
/// (so `a/b` < `a.txt`, because `a` < `a.txt`).
///
/// Symbolic links and other special files are skipped and never followed. A missing `root` is an error.
pub fn walk_sorted(root: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root.as_ref(), Path::new(""), &mut out)?;
    Ok(out)
}

/// [`walk_sorted`] keeping only files whose name ends with one of `extensions` (e.g. `[".yaml", ".yml"]`).
pub fn walk_sorted_with_suffix(root: impl AsRef<Path>, suffixes: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut files = walk_sorted(root)?;
    files.retain(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        suffixes.iter().any(|s| name.ends_with(s) && name.len() > s.len())
    });
    Ok(files)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<(OsString, FileType)> = Vec::new();
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        entries.push((entry.file_name(), entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    for (name, kind) in entries {
        let path = rel.join(name);
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// A relative path as diagnostics show it: components joined with `/`, lossy UTF-8.
pub fn display_path(path: &Path) -> String {
    let mut s = String::new();
    for c in path.components() {
        let part = match c {
            Component::Normal(p) => p.to_string_lossy(),
            Component::ParentDir => "..".into(),
            Component::CurDir => continue,
            Component::RootDir | Component::Prefix(_) => continue,
        };
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(&part);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("artgen-sdk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sorted_by_components_regardless_of_creation_order() {
        let names = ["b.txt", "a.txt", "a/z", "a/b/c", "A", "a-", "a/b.yaml"];
        let mut results = Vec::new();
        for (i, order) in [names.to_vec(), names.iter().rev().copied().collect()]
            .into_iter()
            .enumerate()
        {
            let d = tempdir(&format!("walk{i}"));
            for n in order {
                let p = d.join(n);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, n).unwrap();
            }
            std::fs::create_dir_all(d.join("empty/dir")).unwrap();
            #[cfg(unix)]
            std::os::unix::fs::symlink("/etc", d.join("link")).unwrap();
            let files: Vec<String> = walk_sorted(&d).unwrap().iter().map(|p| display_path(p)).collect();
            results.push(files);
            std::fs::remove_dir_all(&d).unwrap();
        }
        assert_eq!(
            results[0],
            ["A", "a/b/c", "a/b.yaml", "a/z", "a-", "a.txt", "b.txt"]
        );
        assert_eq!(results[0], results[1]);
    }

    #[test]
    fn suffix_filter() {
        let d = tempdir("suffix");
        for n in ["x.yaml", "y.yml", ".yaml", "z.json"] {
            std::fs::write(d.join(n), "").unwrap();
        }
        let files = walk_sorted_with_suffix(&d, &[".yaml", ".yml"]).unwrap();
        assert_eq!(files, [PathBuf::from("x.yaml"), PathBuf::from("y.yml")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn display() {
        assert_eq!(display_path(Path::new("a/./b/c.txt")), "a/b/c.txt");
        assert_eq!(display_path(Path::new("")), "");
    }
}
