//! Path globs for allow lists, matched against `/`-separated paths relative to `/work`.
//!
//! * `*` matches any run of characters except `/`, `?` one character except `/`;
//! * `**` matches any run of characters including `/`; `**/` also matches zero directories (`**/x` matches `x`);
//! * a pattern without `/` matches the file name at any depth (`*.md` matches `docs/a.md`), as in `.gitignore`;
//! * a leading `/` anchors the pattern at the root and is otherwise ignored;
//! * everything else is literal (no `[…]` classes, no `{…}` alternatives).

/// Whether `path` (relative, `/`-separated) matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_prefix('/') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let p: Vec<char> = pattern.chars().collect();
    if !anchored && !pattern.contains('/') {
        let name = path.rsplit('/').next().unwrap_or(path);
        let s: Vec<char> = name.chars().collect();
        return match_here(&p, &s);
    }
    let s: Vec<char> = path.chars().collect();
    match_here(&p, &s)
}

/// Whether any of `patterns` matches `path`.
pub fn any_matches<S: AsRef<str>>(patterns: &[S], path: &str) -> bool {
    patterns.iter().any(|p| matches(p.as_ref(), path))
}

fn match_here(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            if let Some(after_slash) = rest.strip_prefix(&['/']) {
                // `**/`: zero or more whole directories.
                if match_here(after_slash, s) {
                    return true;
                }
                (0..s.len()).any(|i| s[i] == '/' && match_here(after_slash, &s[i + 1..]))
            } else {
                (0..=s.len()).any(|i| match_here(rest, &s[i..]))
            }
        }
        Some('*') => {
            for i in 0..=s.len() {
                if match_here(&p[1..], &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !s.is_empty() && s[0] != '/' && match_here(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && match_here(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        let yes = [
            ("*.md", "README.md"),
            ("*.md", "docs/a.md"),
            ("docs/*.md", "docs/a.md"),
            ("docs/**", "docs/a/b/c.txt"),
            ("**/testdata/**", "testdata/x"),
            ("**/testdata/**", "a/b/testdata/x/y"),
            ("a/**/z", "a/z"),
            ("a/**/z", "a/b/c/z"),
            ("/top.txt", "top.txt"),
            ("fil?.txt", "file.txt"),
            ("**", "anything/at/all"),
        ];
        for (p, s) in yes {
            assert!(matches(p, s), "{p} should match {s}");
        }
        let no = [
            ("docs/*.md", "docs/a/b.md"),
            ("docs/*.md", "other/docs/a.md"),
            ("/top.txt", "sub/top.txt"),
            ("fil?.txt", "fil/.txt"),
            ("a/**/z", "a/zz"),
            ("*.md", "README.mdx"),
        ];
        for (p, s) in no {
            assert!(!matches(p, s), "{p} should not match {s}");
        }
    }
}
