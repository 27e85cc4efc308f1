//! The one glob engine for `from`, `exclude` and Extract (spec §3.2 classification, §3.3 syntax).
//!
//! A pattern is compiled once into a [`regex::Regex`] anchored at both ends. We do not use globset: it has
//! no alternation containing `/` or nested groups, and its `a/**` does not match `a` itself.
//!
//! Brace groups follow *expansion semantics* (as bmatcuk/doublestar, which upstream uses for excludes): the
//! pattern means the union of its brace expansions, each read with the usual rules. Groups whose
//! alternatives are plain non-empty text without `*` or `/` ("simple" groups such as `{yaml,yml}`) cannot
//! change how a neighbouring `**` or `/` is read, so they compile in place to `(?:yaml|yml)`; only the other
//! groups are expanded, which keeps real patterns small.

use std::fmt::Write as _;

use regex::{Regex, RegexBuilder};

/// Most alternatives a pattern may expand to (only non-simple groups expand); beyond that it is rejected
/// rather than compiled into a huge regex.
const MAX_EXPANSIONS: usize = 256;

/// Glob iff the path contains `*`, `?`, `[` or `{`, escaped or not (spec §3.2).
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Characters that end the selection root: the glob characters, and `\` because a segment with an escape
/// is not a plain directory name.
fn is_root_breaker(seg: &str) -> bool {
    seg.contains(['*', '?', '[', '{', '\\'])
}

/// Selection root R of a cleaned glob path (spec §3.5 step 1): its leading segments that contain none of
/// `* ? [ {`. Returns `""` (not `.`) for the alias root, so callers can join without special cases.
///
/// A segment containing `\` also ends the root (an escaped name is not a plain directory name). For a
/// literal path (no glob character) the whole path is returned (`""` for `.`).
pub fn selection_root(cleaned: &str) -> &str {
    if cleaned == "." {
        return "";
    }
    let mut end = 0;
    let mut start = 0;
    for seg in cleaned.split('/') {
        if is_root_breaker(seg) {
            break;
        }
        end = start + seg.len();
        start = end + 1;
    }
    &cleaned[..end]
}

/// Lexical cleaning with Go `path.Clean` semantics: empty and `.` segments dropped, `x/..` collapsed,
/// trailing `/` dropped; `""` and `.` clean to `.`. Applied to glob paths too (their `/` are separators).
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut stack: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if stack.last().is_some_and(|last| *last != "..") {
                    stack.pop();
                } else if !rooted {
                    stack.push("..");
                }
            }
            _ => stack.push(seg),
        }
    }
    let joined = stack.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// A malformed pattern (spec §3.3: validation error, §2.7 row 10).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unclosed '[' at offset {offset}")]
    UnclosedClass { offset: usize },
    #[error("unclosed '{{' at offset {offset}")]
    UnclosedBrace { offset: usize },
    #[error("trailing '\\' escapes nothing")]
    TrailingBackslash,
    #[error("invalid character range '{lo}-{hi}'")]
    InvalidRange { lo: char, hi: char },
    #[error("pattern expands to more than {MAX_EXPANSIONS} alternatives")]
    TooComplex,
}

/// A compiled glob (spec §3.3).
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    dirs_only: bool,
    has_separator: bool,
    /// `None` for patterns that can match no relative path (leading `/`).
    regex: Option<Regex>,
}

impl Glob {
    /// Compiles `pattern`. Trailing unescaped `/` characters set [`Glob::dirs_only`] and are stripped; a
    /// pattern starting with `/` is valid and matches nothing (paths are relative). The pattern is not
    /// cleaned: use [`Glob::from_path`] for the path of a `from`.
    pub fn new(pattern: &str) -> Result<Glob, PatternError> {
        let (body, dirs_only) = strip_trailing_slashes(pattern);
        let items = Parser::new(body).parse()?;
        let has_separator = body.contains('/');
        let regex = if pattern.starts_with('/') {
            None
        } else {
            Some(compile(&items)?)
        };
        Ok(Glob {
            pattern: pattern.to_string(),
            dirs_only,
            has_separator,
            regex,
        })
    }

    /// Compiles the path part of a `from` the way staging uses it: lexically cleaned, with a trailing `/`
    /// kept as "directories only" (spec §3.2). Validation and staging both call this so they agree.
    pub fn from_path(path: &str) -> Result<Glob, PatternError> {
        let cleaned = clean(path);
        if path.ends_with('/') && cleaned != "." && cleaned != "/" {
            Glob::new(&format!("{cleaned}/"))
        } else {
            Glob::new(&cleaned)
        }
    }

    /// Whether the whole `path` matches. `path` is relative, `/`-separated, cleaned and has no trailing
    /// `/`. [`Glob::dirs_only`] is not applied here: the caller knows whether `path` is a directory.
    pub fn is_match(&self, path: &str) -> bool {
        self.regex.as_ref().is_some_and(|re| re.is_match(path))
    }

    /// The pattern ended with `/`: only directories may match (spec §3.3, §3.6 rule 4).
    pub fn dirs_only(&self) -> bool {
        self.dirs_only
    }

    /// The pattern contains `/` (ignoring trailing ones): exclude rule 2 (basename match) does not apply.
    pub fn has_separator(&self) -> bool {
        self.has_separator
    }

    /// The pattern exactly as given (including a trailing `/`).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Splits off trailing unescaped `/` characters.
fn strip_trailing_slashes(pattern: &str) -> (&str, bool) {
    let mut body = pattern;
    let mut stripped = false;
    while body.ends_with('/') && !ends_escaped(&body[..body.len() - 1]) {
        body = &body[..body.len() - 1];
        stripped = true;
    }
    (body, stripped)
}

/// Whether the character after `prefix` would be escaped (odd number of trailing backslashes).
fn ends_escaped(prefix: &str) -> bool {
    prefix.bytes().rev().take_while(|b| *b == b'\\').count() % 2 == 1
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Lit(char),
    Slash,
    Star,
    Any,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Group(Vec<Vec<Item>>),
}

enum End {
    Eof,
    Comma,
    Close,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn new(pattern: &str) -> Parser {
        Parser {
            chars: pattern.chars().collect(),
            pos: 0,
        }
    }

    fn parse(mut self) -> Result<Vec<Item>, PatternError> {
        let (items, _) = self.seq(None)?;
        Ok(items)
    }

    /// Parses a sequence; `group` is the offset of the enclosing `{`, if any (`,` and `}` are literal
    /// outside groups).
    fn seq(&mut self, group: Option<usize>) -> Result<(Vec<Item>, End), PatternError> {
        let mut items = Vec::new();
        loop {
            let Some(&c) = self.chars.get(self.pos) else {
                return match group {
                    Some(offset) => Err(PatternError::UnclosedBrace { offset }),
                    None => Ok((items, End::Eof)),
                };
            };
            let at = self.pos;
            self.pos += 1;
            let item = match c {
                '\\' => match self.next_char() {
                    Some('/') => Item::Slash,
                    Some(e) => Item::Lit(e),
                    None => return Err(PatternError::TrailingBackslash),
                },
                '*' => Item::Star,
                '?' => Item::Any,
                '/' => Item::Slash,
                '[' => self.class(at)?,
                '{' => {
                    let mut alts = Vec::new();
                    loop {
                        let (alt, end) = self.seq(Some(at))?;
                        alts.push(alt);
                        if let End::Close = end {
                            break;
                        }
                    }
                    Item::Group(alts)
                }
                ',' if group.is_some() => return Ok((items, End::Comma)),
                '}' if group.is_some() => return Ok((items, End::Close)),
                other => Item::Lit(other),
            };
            items.push(item);
        }
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Parses a class after its `[` (at offset `open`). A `]` right after `[`, `[!` or `[^` is literal; a
    /// `-` first or last is literal; `\c` is `c`.
    fn class(&mut self, open: usize) -> Result<Item, PatternError> {
        let unclosed = PatternError::UnclosedClass { offset: open };
        let negated = matches!(self.chars.get(self.pos), Some('!' | '^'));
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = *self.chars.get(self.pos).ok_or_else(|| unclosed.clone())?;
            if c == ']' && !first {
                self.pos += 1;
                return Ok(Item::Class { negated, ranges });
            }
            first = false;
            let lo = self.class_char().ok_or_else(|| unclosed.clone())?;
            let is_range = self.chars.get(self.pos) == Some(&'-')
                && self.chars.get(self.pos + 1).is_some_and(|c| *c != ']');
            if is_range {
                self.pos += 1;
                let hi = self.class_char().ok_or_else(|| unclosed.clone())?;
                if hi < lo {
                    return Err(PatternError::InvalidRange { lo, hi });
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
    }

    fn class_char(&mut self) -> Option<char> {
        match self.next_char()? {
            '\\' => self.next_char(),
            c => Some(c),
        }
    }
}

/// A group is simple when every alternative is non-empty and made only of literal characters, `?`,
/// classes and simple groups: its expansions are then always non-empty runs of "ordinary" characters, so
/// it cannot form or touch a `**` segment and compiles in place without changing the meaning.
fn is_simple(alts: &[Vec<Item>]) -> bool {
    alts.iter().all(|alt| {
        !alt.is_empty()
            && alt.iter().all(|item| match item {
                Item::Lit(_) | Item::Any | Item::Class { .. } => true,
                Item::Group(inner) => is_simple(inner),
                Item::Slash | Item::Star => false,
            })
    })
}

/// Expands every non-simple group (cross product), keeping simple groups as items.
fn expand(seq: &[Item]) -> Result<Vec<Vec<Item>>, PatternError> {
    let mut out: Vec<Vec<Item>> = vec![Vec::new()];
    for item in seq {
        match item {
            Item::Group(alts) if !is_simple(alts) => {
                let mut variants = Vec::new();
                for alt in alts {
                    variants.extend(expand(alt)?);
                }
                let mut next = Vec::with_capacity(out.len() * variants.len());
                for prefix in &out {
                    for variant in &variants {
                        if next.len() == MAX_EXPANSIONS {
                            return Err(PatternError::TooComplex);
                        }
                        let mut v = prefix.clone();
                        v.extend(variant.iter().cloned());
                        next.push(v);
                    }
                }
                out = next;
            }
            other => out.iter_mut().for_each(|v| v.push(other.clone())),
        }
    }
    Ok(out)
}

fn compile(items: &[Item]) -> Result<Regex, PatternError> {
    let mut alternatives: Vec<String> = Vec::new();
    for expansion in expand(items)? {
        let mut re = String::new();
        translate(&expansion, &mut re);
        if !alternatives.contains(&re) {
            alternatives.push(re);
        }
    }
    // (?s): `**` must also cross names containing a newline.
    let source = format!(r"(?s)\A(?:{})\z", alternatives.join("|"));
    RegexBuilder::new(&source)
        .build()
        .map_err(|_| PatternError::TooComplex)
}

/// Translates one expansion (no non-simple groups left). Segments are split at `/`; a segment made only of
/// two or more `*` is a whole-segment `**` and stands for zero or more whole segments, so it absorbs one
/// neighbouring separator: `a/**/b` → `a(?:/[^/]+)*/b`, `**/b` → `(?:[^/]+/)*b`, `a/**` → `a(?:/[^/]+)*`.
fn translate(expansion: &[Item], re: &mut String) {
    let segments: Vec<&[Item]> = expansion.split(|i| matches!(i, Item::Slash)).collect();
    let count = segments.len();
    // Whether something has been emitted that the next segment must be separated from by a `/`.
    let mut need_sep = false;
    for (i, seg) in segments.iter().enumerate() {
        let double_star = seg.len() >= 2 && seg.iter().all(|i| matches!(i, Item::Star));
        if double_star {
            if need_sep {
                re.push_str("(?:/[^/]+)*");
            } else if i + 1 == count {
                re.push_str(".*");
            } else {
                re.push_str("(?:[^/]+/)*");
            }
        } else {
            if need_sep {
                re.push('/');
            }
            translate_segment(seg, re);
            need_sep = true;
        }
    }
}

fn translate_segment(seg: &[Item], re: &mut String) {
    let mut prev_star = false;
    for item in seg {
        let star = matches!(item, Item::Star);
        if !(star && prev_star) {
            translate_item(item, re);
        }
        prev_star = star;
    }
}

fn translate_item(item: &Item, re: &mut String) {
    match item {
        Item::Lit(c) => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        Item::Star => re.push_str("[^/]*"),
        Item::Any => re.push_str("[^/]"),
        Item::Slash => re.push('/'),
        Item::Class { negated, ranges } => {
            re.push_str(if *negated { "[^/" } else { "[" });
            for (lo, hi) in ranges {
                let _ = write!(re, "\\x{{{:X}}}", u32::from(*lo));
                if lo != hi {
                    let _ = write!(re, "-\\x{{{:X}}}", u32::from(*hi));
                }
            }
            // A class never matches `/`, even when it lists it.
            re.push_str(if *negated { "]" } else { "&&[^/]]" });
        }
        Item::Group(alts) => {
            re.push_str("(?:");
            for (i, alt) in alts.iter().enumerate() {
                if i > 0 {
                    re.push('|');
                }
                translate_segment(alt, re);
            }
            re.push(')');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[track_caller]
    fn yes(p: &str, paths: &[&str]) {
        let g = glob(p);
        for path in paths {
            assert!(g.is_match(path), "{p:?} should match {path:?}");
        }
    }

    #[track_caller]
    fn no(p: &str, paths: &[&str]) {
        let g = glob(p);
        for path in paths {
            assert!(!g.is_match(path), "{p:?} should not match {path:?}");
        }
    }

    #[test]
    fn classification() {
        for p in [
            "*.yaml",
            "a?",
            "[ab]",
            "{a,b}",
            r"weird\{a,b\}.yaml",
            r"a\*",
            "**",
        ] {
            assert!(is_glob(p), "{p}");
        }
        for p in ["", "a/b.yaml", "x]", "x}", "a,b", r"a\b", ".", "../x"] {
            assert!(!is_glob(p), "{p}");
        }
    }

    #[test]
    fn clean_is_go_path_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("a/../../x", "../x"),
            ("../x/", "../x"),
            ("..", ".."),
            ("a/..", "."),
            ("/..", "/"),
            ("/a/../..", "/"),
            ("/", "/"),
            ("//a", "/a"),
            ("configs/*/", "configs/*"),
            ("a/b/../../../c", "../c"),
            ("../../a", "../../a"),
            ("..a/b", "..a/b"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn selection_roots_of_spec_3_5() {
        let cases = [
            ("configs/*.yaml", "configs"),
            ("deploy/**/*.yaml", "deploy"),
            ("**/*.yaml", ""),
            ("{apps,infra}/*.yaml", ""),
            ("a/*/c/*.yaml", "a"),
            ("configs/**", "configs"),
            ("dir/*", "dir"),
            ("*.yaml", ""),
            ("configs/*", "configs"),
            ("charts/p*", "charts"),
            ("**/config/**", ""),
            ("infrastructure/**", "infrastructure"),
            ("releases/**/*.tgz", "releases"),
            ("x/{a/b,c}/d", "x"),
            (r"a/weird\{a,b\}.yaml", "a"),
            (r"a\b/*.yaml", ""),
            ("a/b]/c}/*", "a/b]/c}"),
            (".", ""),
            ("a/b", "a/b"),
        ];
        for (input, want) in cases {
            assert_eq!(selection_root(input), want, "selection_root({input:?})");
        }
    }

    #[test]
    fn star() {
        yes("*", &["a", ".env", "a.yaml", "é"]);
        no("*", &["a/b"]);
        yes("*.yaml", &["a.yaml", ".yaml", "x.y.yaml"]);
        no("*.yaml", &["a.yml", "d/a.yaml"]);
        yes("a*b", &["ab", "axxb"]);
        no("a*b", &["a/b", "axb/b"]);
        yes("configs/*.yaml", &["configs/a.yaml", "configs/.hidden.yaml"]);
        no("configs/*.yaml", &["configs/x/a.yaml", "a.yaml", "configs"]);
        yes("*/", &["x"]);
    }

    #[test]
    fn question_mark() {
        yes("a.yam?", &["a.yaml"]);
        no("a.yam?", &["ab.yaml", "a.yam", "a.yamll"]);
        yes("?", &["é", "."]);
        no("?", &["/", "ab", ""]);
        no("a?b", &["a/b"]);
    }

    #[test]
    fn classes() {
        yes("[ab].y*ml", &["a.yaml", "b.yml"]);
        no("[ab].y*ml", &["c.yaml"]);
        yes("[a-c]", &["a", "b", "c"]);
        no("[a-c]", &["d", "A", "/"]);
        yes("[!a]*", &["b.yaml", "!"]);
        no("[!a]*", &["a.yaml"]);
        yes("[^a]*", &["b.yaml"]);
        no("[^a]*", &["a.yaml"]);
        yes("[!s]*", &["a.yaml"]);
        no("[!s]*", &["s.yaml"]);
        no("x[!a]y", &["x/y"]);
        no("x[/]y", &["x/y"]);
        no("x[a/]y", &["x/y"]);
        yes("x[a/]y", &["xay"]);
        yes("[]a]", &["]", "a"]);
        yes("[!]a]", &["b"]);
        no("[!]a]", &["]", "a"]);
        yes("[a-]", &["a", "-"]);
        yes("[-a]", &["a", "-"]);
        yes(r"[\]]", &["]"]);
        yes(r"[\-a]", &["-", "a"]);
        yes("[*?{]", &["*", "?", "{"]);
        no("[*?{]", &["a"]);
        yes("[é-ë]", &["ê"]);
        yes("[[]", &["["]);
        yes("[&&]", &["&"]);
        yes("[~^]", &["~", "^"]);
    }

    #[test]
    fn braces() {
        yes("*.{yaml,yml}", &["a.yaml", "b.yml"]);
        no("*.{yaml,yml}", &["c.txt", "a.yamlyml"]);
        yes("{app}.md", &["app.md"]);
        no("{app}.md", &["{app}.md"]);
        yes("a{,b}c", &["ac", "abc"]);
        yes("{a,}", &["a"]);
        yes("{apps,infra}/*.yaml", &["apps/a.yaml", "infra/b.yaml"]);
        no("{apps,infra}/*.yaml", &["other/c.yaml", "apps/sub/d.yaml"]);
        yes("{a/b,c}/x", &["a/b/x", "c/x"]);
        no("{a/b,c}/x", &["a/x", "b/x"]);
        yes("{a,{b,c/d}}.txt", &["a.txt", "b.txt", "c/d.txt"]);
        no("{a,{b,c/d}}.txt", &["c.txt", "d.txt"]);
        yes("{*.md,docs/**}", &["x.md", "docs", "docs/a/b"]);
        no("{*.md,docs/**}", &["a/x.md", "docsx"]);
        yes("weird{a,b}.yaml", &["weirda.yaml", "weirdb.yaml"]);
        no("weird{a,b}.yaml", &["weird{a,b}.yaml"]);
        yes("{[ab],?x}", &["a", "zx"]);
        yes("x{}y", &["xy"]);
    }

    #[test]
    fn braces_interacting_with_double_star() {
        // Expansion semantics: `a/{**,x}/c` is `a/**/c` or `a/x/c`.
        yes("a/{**,x}/c", &["a/c", "a/p/q/c", "a/x/c"]);
        no("a/{**,x}/c", &["ac", "a/c/d"]);
        yes("{**,x}/c", &["c", "p/c", "x/c"]);
        yes("a/{x/**,y}", &["a/x", "a/x/z/w", "a/y"]);
        no("a/{x/**,y}", &["a/y/z"]);
        // `a/*{*,x}` expands to `a/**` (whole segment) or `a/*x`.
        yes("a/*{*,x}", &["a", "a/b/c", "a/bx"]);
        // `**{,x}` is `**` or `**x` (= `*x`).
        yes("a/**{,x}", &["a", "a/b/c", "a/bx"]);
        yes("a/{,b}**", &["a", "a/q/r", "a/bz"]);
        no("a/{b,c}**", &["a", "a/q/r"]);
        yes("a/{b,c}**", &["a/bq"]);
        yes("**/{a,b/c}/*.yaml", &["a/x.yaml", "z/b/c/y.yaml"]);
        no("**/{a,b/c}/*.yaml", &["b/x.yaml"]);
    }

    #[test]
    fn double_star_whole_segment() {
        yes("a/**/b", &["a/b", "a/x/b", "a/x/y/b"]);
        no("a/**/b", &["ab", "a/xb", "x/a/b", "a/b/c"]);
        yes("a/**", &["a", "a/x", "a/x/y"]);
        no("a/**", &["ab", "b/a"]);
        yes("**/b", &["b", "x/b", "x/y/b"]);
        no("**/b", &["xb", "b/x"]);
        yes("**", &["a", "a/b", ".git/config", "x\ny"]);
        yes("**/*.yaml", &["top.yaml", "a/one.yaml", "a/b/c/three.yaml"]);
        no("**/*.yaml", &["a/skip.txt", "a"]);
        yes(
            "deploy/**/*.yaml",
            &["deploy/a.yaml", "deploy/x/y.yaml", "deploy/x/z/w.yaml"],
        );
        no("deploy/**/*.yaml", &["a.yaml", "deploy"]);
        yes(
            "**/config/**",
            &["config", "config/top.yaml", "a/config", "b/c/config/d/y.yaml"],
        );
        no("**/config/**", &["configs/z.yaml", "a/other.yaml", "configs"]);
        yes("a/**/**/b", &["a/b", "a/x/b", "a/x/y/b"]);
        yes("**/**/b", &["b", "x/y/b"]);
        yes("**/**", &["a", "a/b"]);
        yes("***", &["a", "a/b"]);
        yes("a/***/b", &["a/b", "a/x/y/b"]);
    }

    #[test]
    fn double_star_inside_a_segment_is_a_star() {
        yes("a**b", &["ab", "axxb"]);
        no("a**b", &["a/b", "a/x/b"]);
        yes("**.yaml", &["a.yaml"]);
        no("**.yaml", &["d/a.yaml"]);
        yes("x/**y", &["x/ay"]);
        no("x/**y", &["x/a/y"]);
    }

    #[test]
    fn escapes() {
        yes(r"weird\{a,b\}.yaml", &["weird{a,b}.yaml"]);
        no(r"weird\{a,b\}.yaml", &["weirda.yaml"]);
        yes(r"\*", &["*"]);
        no(r"\*", &["a"]);
        yes(r"a\?", &["a?"]);
        yes(r"\[x]", &["[x]"]);
        yes(r"\a\b", &["ab"]);
        yes(r"a\\b", &[r"a\b"]);
        yes(r"{a\,b,c}", &["a,b", "c"]);
        yes(r"{a\}b,c}", &["a}b"]);
        yes(r"a\/b", &["a/b"]);
    }

    #[test]
    fn unopened_closers_and_commas_are_literal() {
        yes("a]", &["a]"]);
        yes("a}", &["a}"]);
        yes("a,b", &["a,b"]);
        yes("}{a,b}", &["}a"]);
    }

    #[test]
    fn matching_is_case_sensitive_and_literal() {
        yes("LOGO.PNG", &["LOGO.PNG"]);
        no("LOGO.PNG", &["logo.png"]);
        no("a.b", &["axb"]);
        yes("a+b(c)|d$^", &["a+b(c)|d$^"]);
        yes("é/*", &["é/ü"]);
    }

    #[test]
    fn trailing_slash_sets_dirs_only() {
        let g = glob("tests/");
        assert!(g.dirs_only());
        assert!(!g.has_separator());
        assert!(g.is_match("tests"));
        assert_eq!(g.as_str(), "tests/");
        let g = glob("app/tests/");
        assert!(g.dirs_only() && g.has_separator());
        assert!(g.is_match("app/tests"));
        let g = glob("configs/*/");
        assert!(g.dirs_only());
        assert!(g.is_match("configs/sub"));
        let g = glob("tests//");
        assert!(g.dirs_only() && g.is_match("tests"));
        let g = glob(r"a\/");
        assert!(!g.dirs_only());
        assert!(!glob("*.md").dirs_only());
        assert!(!glob("*.md").has_separator());
        assert!(glob("docs/*.md").has_separator());
        assert!(glob("**/testdata/**").has_separator());
    }

    #[test]
    fn leading_slash_matches_nothing() {
        for p in ["/x", "/", "/**", "//a"] {
            let g = glob(p);
            for path in ["x", "a", "a/b", "/x"] {
                assert!(!g.is_match(path), "{p} {path}");
            }
        }
        // An alternative that is absolute matches nothing either.
        yes("{/a,b}", &["b"]);
        no("{/a,b}", &["a"]);
    }

    #[test]
    fn malformed_patterns() {
        let bad = [
            ("[*.md", PatternError::UnclosedClass { offset: 0 }),
            ("a[", PatternError::UnclosedClass { offset: 1 }),
            ("[]", PatternError::UnclosedClass { offset: 0 }),
            ("[!]", PatternError::UnclosedClass { offset: 0 }),
            (r"[a\", PatternError::UnclosedClass { offset: 0 }),
            ("{a,b", PatternError::UnclosedBrace { offset: 0 }),
            ("x/{a,{b}", PatternError::UnclosedBrace { offset: 2 }),
            ("{", PatternError::UnclosedBrace { offset: 0 }),
            (r"a\", PatternError::TrailingBackslash),
            (r"{a,\", PatternError::TrailingBackslash),
            ("[z-a]", PatternError::InvalidRange { lo: 'z', hi: 'a' }),
        ];
        for (p, want) in bad {
            assert_eq!(Glob::new(p).unwrap_err(), want, "{p}");
        }
        // Escaped trailing backslash and escaped openers are fine.
        for p in [r"a\\", r"\[", r"\{", "]", "}", "[[]", "[{]"] {
            assert!(Glob::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn expansion_is_bounded() {
        let p = "{a/x,b}".repeat(9);
        assert_eq!(Glob::new(&p).unwrap_err(), PatternError::TooComplex);
        // Simple groups do not expand, however many there are.
        let p = "{a,b,c}".repeat(40);
        assert!(glob(&p).is_match(&"abc".repeat(14).chars().take(40).collect::<String>()));
    }

    #[test]
    fn from_path_cleans_and_keeps_trailing_slash() {
        let g = Glob::from_path("configs/*/").unwrap();
        assert!(g.dirs_only() && g.is_match("configs/sub"));
        let g = Glob::from_path("./a//*.yaml").unwrap();
        assert!(!g.dirs_only() && g.is_match("a/x.yaml"));
        let g = Glob::from_path("**/").unwrap();
        assert!(g.dirs_only() && g.is_match("a/b"));
        assert!(Glob::from_path("a/[").is_err());
    }

    /// Files and directories of a source tree given as file paths (`x/` = directory).
    fn tree(entries: &[&str]) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for e in entries {
            let e = e.trim_end_matches('/');
            let mut acc = String::new();
            for seg in e.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(seg);
                out.insert(acc.clone());
            }
        }
        out.into_iter().collect()
    }

    /// §3.5 steps 1, 2 and 5 on a path list: matches strictly below R, minus those below a matched path
    /// that is a directory (here: a prefix of another entry).
    fn select(pattern: &str, entries: &[&str]) -> Vec<String> {
        let all = tree(entries);
        let is_dir = |p: &str| all.iter().any(|q| q.starts_with(&format!("{p}/")));
        let cleaned = clean(pattern);
        let root = selection_root(&cleaned);
        let g = Glob::from_path(pattern).unwrap();
        let matched: Vec<&String> = all
            .iter()
            .filter(|p| root.is_empty() || p.starts_with(&format!("{root}/")))
            .filter(|p| g.is_match(p) && (!g.dirs_only() || is_dir(p)))
            .collect();
        matched
            .iter()
            .filter(|p| {
                !matched
                    .iter()
                    .any(|d| is_dir(d) && p.starts_with(&format!("{d}/")))
            })
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn worked_examples_of_spec_3_5() {
        let s = [
            "configs/a.yaml",
            "configs/b.yaml",
            "configs/n.txt",
            "configs/sub/c.yaml",
            "deploy/a.yaml",
            "deploy/x/y.yaml",
            "deploy/x/z/w.yaml",
            "dir/a.yaml",
            "dir/sub/b",
            "x.yaml/inner",
            "a.yaml",
            "apps/a.yaml",
            "infra/b.yaml",
            "a/x/c/1.yaml",
        ];
        assert_eq!(select("configs/*.yaml", &s), ["configs/a.yaml", "configs/b.yaml"]);
        assert_eq!(
            select("configs/**", &s),
            ["configs/a.yaml", "configs/b.yaml", "configs/n.txt", "configs/sub"]
        );
        assert_eq!(
            select("deploy/**/*.yaml", &s),
            ["deploy/a.yaml", "deploy/x/y.yaml", "deploy/x/z/w.yaml"]
        );
        assert_eq!(select("dir/*", &s), ["dir/a.yaml", "dir/sub"]);
        assert_eq!(select("*.yaml", &s), ["a.yaml", "x.yaml"]);
        assert_eq!(select("configs/*/", &s), ["configs/sub"]);
        assert_eq!(select("{apps,infra}/*.yaml", &s), ["apps/a.yaml", "infra/b.yaml"]);
        assert_eq!(select("a/*/c/*.yaml", &s), ["a/x/c/1.yaml"]);
        let yaml = select("**/*.yaml", &s);
        assert!(yaml.contains(&"a.yaml".into()) && yaml.contains(&"deploy/x/z/w.yaml".into()));
        assert!(!yaml.iter().any(|p| p.ends_with(".txt")));
    }

    #[test]
    fn copy_yaml_globs() {
        let t = ["deployment.yaml", "service.yaml", "configmap.yaml"];
        assert_eq!(
            select("*.yaml", &t),
            ["configmap.yaml", "deployment.yaml", "service.yaml"]
        );
        let t = ["root.yaml", "subdir/nested.yaml"];
        assert_eq!(select("**", &t), ["root.yaml", "subdir"]);
        let t = ["configs/file1.yaml", "configs/file2.yaml", "configs/notes.txt"];
        assert_eq!(
            select("configs/*.yaml", &t),
            ["configs/file1.yaml", "configs/file2.yaml"]
        );
        let t = ["dir/a.yaml", "dir/sub/b.yaml"];
        assert_eq!(select("dir/*", &t), ["dir/a.yaml", "dir/sub"]);
        let t = ["configs/file1.yaml", "configs/subdir/file2.yaml"];
        assert_eq!(select("configs/**", &t), ["configs/file1.yaml", "configs/subdir"]);
        let t = [
            "top.yaml",
            "a/one.yaml",
            "a/b/two.yaml",
            "a/b/c/three.yaml",
            "a/skip.txt",
        ];
        assert_eq!(
            select("**/*.yaml", &t),
            ["a/b/c/three.yaml", "a/b/two.yaml", "a/one.yaml", "top.yaml"]
        );
        let t = ["deploy/a.yaml", "deploy/x/y.yaml", "deploy/x/z/w.yaml"];
        assert_eq!(
            select("deploy/**/*.yaml", &t),
            ["deploy/a.yaml", "deploy/x/y.yaml", "deploy/x/z/w.yaml"]
        );
        assert_eq!(select("a.yam?", &["a.yaml", "ab.yaml"]), ["a.yaml"]);
        assert_eq!(
            select("[ab].y*ml", &["a.yaml", "b.yml", "c.yaml"]),
            ["a.yaml", "b.yml"]
        );
        assert_eq!(select("[!a]*", &["a.yaml", "b.yaml"]), ["b.yaml"]);
        assert_eq!(select("*.{yaml,yml}", &["a.yaml", "b.yml"]), ["a.yaml", "b.yml"]);
        assert!(select("weird{a,b}.yaml", &["weird{a,b}.yaml"]).is_empty());
        assert_eq!(
            select(r"weird\{a,b\}.yaml", &["weird{a,b}.yaml"]),
            ["weird{a,b}.yaml"]
        );
        assert_eq!(select("configs/*/", &["configs/sub/a.yaml"]), ["configs/sub"]);
        assert!(select("*.yaml", &[]).is_empty());
        let t = ["app/config.yaml", "app/keep.yaml"];
        assert_eq!(select("app/**", &t), ["app/config.yaml", "app/keep.yaml"]);
        let t = [
            "config/top.yaml",
            "a/config/x.yaml",
            "b/c/config/d/y.yaml",
            "a/other.yaml",
            "configs/z.yaml",
        ];
        assert_eq!(select("**/config/**", &t), ["a/config", "b/c/config", "config"]);
        let t = ["apps/a.yaml", "infra/b.yaml", "other/c.yaml", "apps/sub/d.yaml"];
        assert_eq!(select("{apps,infra}/*.yaml", &t), ["apps/a.yaml", "infra/b.yaml"]);
        let t = [
            "charts/podinfo/Chart.yaml",
            "charts/podinfo/templates/d.yaml",
            "charts/redis/Chart.yaml",
        ];
        assert_eq!(select("charts/p*", &t), ["charts/podinfo"]);
        assert_eq!(select("*.yaml", &["x.yaml"]), ["x.yaml"]);
    }

    #[test]
    fn extract_yaml_globs() {
        assert_eq!(
            select("*.tg*", &["a.tgz", "b.tar.gz", "c.tgx"]),
            ["a.tgz", "c.tgx"]
        );
        let t = ["releases/a.tgz", "releases/x/b.tgz", "releases/x/c.txt"];
        assert_eq!(
            select("releases/**/*.tgz", &t),
            ["releases/a.tgz", "releases/x/b.tgz"]
        );
        assert_eq!(select("**/*.tgz", &["a.tgz", "d/b.tgz"]), ["a.tgz", "d/b.tgz"]);
    }

    #[test]
    fn exclude_yaml_patterns() {
        // Rule 1 and rule 3 (relative to the selection root) use whole-path matches.
        yes(
            "infrastructure/controllers/descheduler/**",
            &[
                "infrastructure/controllers/descheduler",
                "infrastructure/controllers/descheduler/release.yaml",
            ],
        );
        no(
            "infrastructure/controllers/descheduler/**",
            &["infrastructure/controllers/sealed-secrets"],
        );
        yes(
            "controllers/descheduler/**",
            &["controllers/descheduler", "controllers/descheduler/release.yaml"],
        );
        yes("descheduler/**", &["descheduler/release.yaml"]);
        no(
            "descheduler/**",
            &["controllers/descheduler/release.yaml", "controllers/descheduler"],
        );
        yes(
            "**/testdata/**",
            &["testdata", "testdata/test.yaml", "deep/testdata/u.yaml"],
        );
        no("**/testdata/**", &["testdatax/a", "app.yaml"]);
        yes("**/.*", &[".hidden", "a/.git"]);
        no("**/.*", &["a.yaml", "a/b.c"]);
        yes("**/tests/**", &["tests/test.go"]);
        yes("subdir/**", &["subdir/file2.yaml"]);
        yes("docs/*.md", &["docs/a.md"]);
        no("docs/*.md", &["x/docs/b.md"]);
        // Rule 2 (basename) patterns.
        for (p, base) in [
            ("*.md", "README.md"),
            ("*.tmp", "temp.tmp"),
            ("secret.yaml", "secret.yaml"),
            ("testdata", "testdata"),
            ("vendor", "vendor"),
            ("*.{yaml,yml}", "b.yml"),
            ("[!s]*", "a.yaml"),
            ("int.tgz", "int.tgz"),
            ("{app}.txt", "app.txt"),
        ] {
            let g = glob(p);
            assert!(!g.has_separator() && g.is_match(base), "{p} {base}");
        }
        no("vendor", &["vendorized.yaml"]);
        no("[!s]*", &["s.yaml"]);
        let g = glob("tests/");
        assert!(g.dirs_only() && !g.has_separator() && g.is_match("tests") && !g.is_match("tests.yaml"));
        no("tests/", &["tests2"]);
        yes("**", &["cfg/a.yaml", "a.yaml"]);
    }

    #[test]
    fn exclude_rules_of_spec_3_6() {
        yes(
            "infrastructure/controllers/descheduler/**",
            &["infrastructure/controllers/descheduler/x"],
        );
        assert!(!glob("*.md").has_separator());
        assert!(!glob("secret.yaml").has_separator());
        assert!(!glob("testdata").has_separator());
        assert!(!glob("tests/").has_separator());
        assert!(glob("app/tests/").has_separator());
        yes("app/tests/", &["app/tests"]);
        no("app/tests/", &["x/app/tests"]);
        yes("**/dir/**", &["dir", "a/dir", "dir/x"]);
        no("/abs", &["abs"]);
    }
}

/// Differential check: the regex translation against a naive matcher that expands every brace group and
/// matches segment by segment (doublestar's semantics), on random patterns and paths.
#[cfg(test)]
mod differential {
    use super::Glob;

    /// Reference: full brace expansion at string level (the generated patterns have no escapes and no
    /// braces inside classes).
    fn expand_ref(p: &str) -> Vec<String> {
        let b: Vec<char> = p.chars().collect();
        let Some(open) = b.iter().position(|c| *c == '{') else {
            return vec![p.to_string()];
        };
        let mut depth = 0;
        let mut close = None;
        let mut commas = vec![];
        for (i, c) in b.iter().enumerate().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                ',' if depth == 1 => commas.push(i),
                _ => {}
            }
        }
        let close = close.unwrap();
        let pre: String = b[..open].iter().collect();
        let post: String = b[close + 1..].iter().collect();
        let mut bounds = vec![open];
        bounds.extend(commas);
        bounds.push(close);
        let mut out = vec![];
        for w in bounds.windows(2) {
            let alt: String = b[w[0] + 1..w[1]].iter().collect();
            for e in expand_ref(&format!("{pre}{alt}{post}")) {
                out.push(e);
            }
        }
        out
    }

    fn seg_match(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|k| seg_match(&p[1..], &s[k..])),
            Some('?') => !s.is_empty() && seg_match(&p[1..], &s[1..]),
            Some('[') => {
                let end = p.iter().position(|c| *c == ']').unwrap();
                let (neg, set) = if p[1] == '!' {
                    (true, &p[2..end])
                } else {
                    (false, &p[1..end])
                };
                !s.is_empty() && (set.contains(&s[0]) != neg) && seg_match(&p[end + 1..], &s[1..])
            }
            Some(c) => s.first() == Some(c) && seg_match(&p[1..], &s[1..]),
        }
    }

    fn path_match(p: &[&str], s: &[&str]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(seg) if seg.len() >= 2 && seg.chars().all(|c| c == '*') => {
                (0..=s.len()).any(|k| path_match(&p[1..], &s[k..]))
            }
            Some(seg) => {
                !s.is_empty()
                    && seg_match(
                        &seg.chars().collect::<Vec<_>>(),
                        &s[0].chars().collect::<Vec<_>>(),
                    )
                    && path_match(&p[1..], &s[1..])
            }
        }
    }

    fn reference(p: &str, path: &str) -> bool {
        let s: Vec<&str> = path.split('/').collect();
        expand_ref(p)
            .iter()
            .any(|e| path_match(&e.split('/').collect::<Vec<_>>(), &s))
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    fn gen_pattern(r: &mut Rng, depth: u32) -> String {
        let n = 1 + r.next() % 5;
        let mut out = String::new();
        for _ in 0..n {
            let t = r.next() % 10;
            if t < 2 && depth < 2 {
                let k = 1 + r.next() % 3;
                let alts: Vec<String> = (0..k)
                    .map(|_| {
                        if r.next().is_multiple_of(4) {
                            String::new()
                        } else {
                            gen_pattern(r, depth + 1)
                        }
                    })
                    .collect();
                out.push('{');
                out.push_str(&alts.join(","));
                out.push('}');
            } else {
                out.push_str(r.pick(&[
                    "a", "b", "*", "**", "?", "/", "/", "[ab]", "[!a]", "/**/", "**/", "/**",
                ]));
            }
        }
        out
    }

    #[test]
    fn regex_engine_agrees_with_expansion_semantics() {
        let mut r = Rng(0x9E3779B97F4A7C15);
        let mut paths = vec![];
        for a in ["a", "b", "ab", "ba", "aa", "x"] {
            paths.push(a.to_string());
            for b in ["a", "b", "ab", "x"] {
                paths.push(format!("{a}/{b}"));
                for c in ["a", "b", "ab"] {
                    paths.push(format!("{a}/{b}/{c}"));
                    paths.push(format!("{a}/{b}/{c}/a"));
                }
            }
        }
        let mut checked = 0;
        for _ in 0..600 {
            let p = gen_pattern(&mut r, 0);
            if p.starts_with('/') || p.ends_with('/') || expand_ref(&p).len() > 200 {
                continue;
            }
            let g = match Glob::new(&p) {
                Ok(g) => g,
                Err(e) => panic!("{p}: {e}"),
            };
            for path in &paths {
                assert_eq!(
                    g.is_match(path),
                    reference(&p, path),
                    "pattern {p:?} path {path:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 15_000, "{checked}");
    }
}
