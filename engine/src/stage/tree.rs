//! The virtual staging tree: destination path → where the bytes come from.
//!
//! Copy operations only record references to source files (spec allows virtual staging); bytes are read
//! once, when the archive is written. Only merged files live in memory. Directories are unioned and kept
//! sorted by name bytes, so iterating the tree is the archive's walk order (spec §5.1).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use cap_std::fs::Dir;

use crate::pack::ArchiveWriter;

/// Where a staged file's bytes come from.
#[derive(Clone, Debug)]
pub enum Content {
    /// A regular file below `dir` (a source root or an extraction scratch directory); `path` has no
    /// symlinks in it, and `size` is what the walk saw (packing fails if the file changed since).
    File { dir: Arc<Dir>, path: String, size: u64 },
    /// Bytes produced by the engine (merged YAML).
    Bytes(Arc<Vec<u8>>),
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::File { size, .. } => *size,
            Content::Bytes(b) => b.len() as u64,
        }
    }

    pub fn open(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            Content::File { dir, path, .. } => Box::new(dir.open(path)?),
            Content::Bytes(b) => Box::new(b.as_slice()),
        })
    }

    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.size() as usize);
        self.open()?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

#[derive(Clone, Debug)]
pub struct StagedFile {
    pub content: Content,
    pub executable: bool,
}

#[derive(Clone, Debug)]
pub enum Node {
    Dir(BTreeMap<String, Node>),
    File(StagedFile),
}

/// Why a write into the tree was refused (spec §3.1 type conflicts).
#[derive(Debug, PartialEq, Eq)]
pub enum Conflict {
    IsDirectory(String),
    IsFile(String),
}

/// The staged tree of one artifact. The root itself is never archived.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    root: BTreeMap<String, Node>,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut segs = segments(path).peekable();
        segs.peek()?;
        let mut cur = &self.root;
        while let Some(seg) = segs.next() {
            let node = cur.get(seg)?;
            if segs.peek().is_none() {
                return Some(node);
            }
            match node {
                Node::Dir(children) => cur = children,
                Node::File(_) => return None,
            }
        }
        None
    }

    /// True when `path` is the staging root or an existing directory.
    pub fn is_dir(&self, path: &str) -> bool {
        segments(path).next().is_none() || matches!(self.get(path), Some(Node::Dir(_)))
    }

    /// Creates `path` and its parents as directories; an existing file on the way is a conflict.
    pub fn mkdir_all(&mut self, path: &str) -> Result<(), Conflict> {
        self.dir_mut(path).map(|_| ())
    }

    fn dir_mut(&mut self, path: &str) -> Result<&mut BTreeMap<String, Node>, Conflict> {
        let mut cur = &mut self.root;
        let mut walked = String::new();
        for seg in segments(path) {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(seg);
            let node = cur
                .entry(seg.to_owned())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            match node {
                Node::Dir(children) => cur = children,
                Node::File(_) => return Err(Conflict::IsFile(walked)),
            }
        }
        Ok(cur)
    }

    /// Writes (or replaces) a file; parents are created. Replacing a directory is a conflict.
    pub fn put_file(&mut self, path: &str, file: StagedFile) -> Result<(), Conflict> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path),
        };
        let dir = self.dir_mut(parent)?;
        match dir.get_mut(name) {
            Some(Node::Dir(_)) => Err(Conflict::IsDirectory(path.to_owned())),
            Some(slot) => {
                *slot = Node::File(file);
                Ok(())
            }
            None => {
                dir.insert(name.to_owned(), Node::File(file));
                Ok(())
            }
        }
    }

    /// Regular files in walk order, with their paths.
    pub fn files(&self) -> Vec<(String, &StagedFile)> {
        let mut out = Vec::new();
        let _ = self.visit(|path, node| {
            if let Node::File(f) = node {
                out.push((path.to_owned(), f));
            }
            Ok::<_, ()>(())
        });
        out
    }

    /// Visits every node in walk order (directories before their contents).
    pub fn visit<'t, E>(&'t self, mut f: impl FnMut(&str, &'t Node) -> Result<(), E>) -> Result<(), E> {
        fn go<'t, E>(
            prefix: &mut String,
            dir: &'t BTreeMap<String, Node>,
            f: &mut dyn FnMut(&str, &'t Node) -> Result<(), E>,
        ) -> Result<(), E> {
            for (name, node) in dir {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(name);
                f(prefix, node)?;
                if let Node::Dir(children) = node {
                    go(prefix, children, f)?;
                }
                prefix.truncate(len);
            }
            Ok(())
        }
        go(&mut String::new(), &self.root, &mut f)
    }

    /// Writes the tree into the empty directory `dir` (for transforms, which need real files). Modes are
    /// 0644/0755 as in the archive.
    pub fn write_into(&self, dir: &Dir) -> io::Result<()> {
        use cap_std::fs::{OpenOptions, OpenOptionsExt as _};
        self.visit(|path, node| match node {
            Node::Dir(_) => dir.create_dir(path).map_err(|e| annotate(e, path)),
            Node::File(f) => {
                let mut opts = OpenOptions::new();
                opts.write(true)
                    .create_new(true)
                    .mode(if f.executable { 0o755 } else { 0o644 });
                let mut out = dir.open_with(path, &opts).map_err(|e| annotate(e, path))?;
                let mut reader = f.content.open().map_err(|e| annotate(e, path))?;
                io::copy(&mut reader, &mut out).map_err(|e| annotate(e, path))?;
                Ok(())
            }
        })
    }

    /// Streams the tree into an archive in walk order.
    pub fn pack_into<W: io::Write>(&self, writer: &mut ArchiveWriter<W>) -> io::Result<()> {
        self.visit(|path, node| match node {
            Node::Dir(_) => writer.add_dir(path),
            Node::File(f) => {
                let mut reader = f.content.open().map_err(|e| annotate(e, path))?;
                writer
                    .add_file(path, f.content.size(), f.executable, &mut reader)
                    .map_err(|e| annotate(e, path))
            }
        })
    }
}

fn annotate(e: io::Error, path: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> StagedFile {
        StagedFile {
            content: Content::Bytes(Arc::new(s.as_bytes().to_vec())),
            executable: false,
        }
    }

    #[test]
    fn walk_order_is_component_wise() {
        let mut t = Tree::default();
        for p in ["b.yaml", "a/z.yaml", "a.yaml", "a/b/c.yaml", "a-b.yaml"] {
            t.put_file(p, bytes(p)).unwrap();
        }
        let mut seen = Vec::new();
        t.visit(|p, _| {
            seen.push(p.to_owned());
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                "a",
                "a/b",
                "a/b/c.yaml",
                "a/z.yaml",
                "a-b.yaml",
                "a.yaml",
                "b.yaml"
            ]
        );
    }

    #[test]
    fn type_conflicts_are_reported() {
        let mut t = Tree::default();
        t.put_file("x/y", bytes("1")).unwrap();
        assert_eq!(
            t.put_file("x", bytes("2")),
            Err(Conflict::IsDirectory("x".into()))
        );
        assert_eq!(t.mkdir_all("x/y/z"), Err(Conflict::IsFile("x/y".into())));
        assert!(t.is_dir("x") && t.is_dir("") && !t.is_dir("x/y"));
    }
}
