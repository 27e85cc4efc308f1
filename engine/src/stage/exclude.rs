//! Exclude patterns of one copy operation (spec §3.6).

use super::pattern::Glob;

/// The compiled excludes of one operation, anchored at its selection root.
#[derive(Debug)]
pub struct Excludes {
    patterns: Vec<Glob>,
    /// Selection root (alias-relative, "" = alias root); rule 3 also tries paths relative to it.
    root: String,
}

impl Excludes {
    /// Patterns were validated before the build (spec §2.7 row 10), so a compile error here is a bug in
    /// validation; it is still reported, never ignored.
    pub fn new(patterns: &[String], root: &str) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| Glob::new(p).map_err(|e| format!("invalid exclude pattern '{p}': {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Excludes {
            patterns,
            root: root.to_owned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The pattern that excludes `path` itself (rules 1–4); ancestors (rule 5) are the walker's job,
    /// which prunes excluded directories.
    pub fn matching(&self, path: &str, is_dir: bool) -> Option<&str> {
        let relative = if self.root.is_empty() {
            None
        } else {
            path.strip_prefix(self.root.as_str())
                .and_then(|r| r.strip_prefix('/'))
        };
        let last = path.rsplit('/').next().unwrap_or(path);
        self.patterns
            .iter()
            .find(|x| {
                if x.dirs_only() && !is_dir {
                    return false;
                }
                let test = |p: &str| x.is_match(p) || (!x.has_separator() && x.is_match(last));
                test(path) || relative.is_some_and(test)
            })
            .map(Glob::as_str)
    }

    /// Like [`Excludes::matching`] but for paths below an excluded ancestor too (rule 5), checking every
    /// ancestor strictly below the selection root. Used where no walk prunes for us.
    pub fn matching_with_ancestors(&self, path: &str, is_dir: bool) -> Option<&str> {
        let mut prefix_end = if self.root.is_empty() {
            0
        } else {
            self.root.len() + 1
        };
        while let Some(i) = path[prefix_end.min(path.len())..].find('/') {
            let ancestor = &path[..prefix_end + i];
            if let Some(x) = self.matching(ancestor, true) {
                return Some(x);
            }
            prefix_end += i + 1;
        }
        self.matching(path, is_dir)
    }
}
