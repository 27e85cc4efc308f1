//! pathPattern directory discovery and template expansion (spec §6).
//!
//! `@alias/apps/{app}` finds every directory of the alias root whose path matches (captures are
//! `([^/]+)`, literal text is literal), then renders each artifact template once per match. Parsing and the
//! placeholder checks need no source tree, so `artgen validate` runs them too (via
//! [`crate::validate::path_pattern`]); discovery and expansion run at build time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use cap_std::fs::Dir;
use regex::Regex;

use crate::spec::{CopyOperation, OutputArtifact};
use crate::validate::{
    DNS1123_SUBDOMAIN_RULE, LABEL_NAME_RULE, is_dns1123_subdomain, is_label_key, is_label_value,
};

/// A parsed `spec.pathPattern`.
#[derive(Debug, Clone)]
pub struct PathPattern {
    /// The source alias whose tree is searched.
    pub alias: String,
    /// The whole spec value, quoted in every message.
    raw: String,
    captures: Vec<String>,
    regex: Regex,
    /// One anchored regex per path segment: a directory can only lead to a match while every segment of
    /// its path matches, so the walk prunes everything else (and never descends deeper than the pattern).
    segments: Vec<Regex>,
}

/// One rendered artifact (spec §6 steps 6–7).
#[derive(Debug, Clone)]
pub struct Expanded {
    pub artifact: OutputArtifact,
    /// The normalized capture map; becomes ExternalArtifact labels (§8.1).
    pub labels: BTreeMap<String, String>,
    /// The matched directory, alias-relative.
    pub dir: String,
}

/// Plain segment name put in place of every placeholder when templates are checked without directories.
const SAMPLE: &str = "x";

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_capture_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Anchored regex for a pattern fragment whose captures are already validated. Escaped text and
/// `([^/]+)` groups are always valid; only an absurdly long pattern could exceed the regex size limit.
fn fragment_regex(fragment: &str) -> Result<Regex, regex::Error> {
    let mut re = String::from(r"\A");
    let mut rest = fragment;
    while let Some(open) = rest.find('{') {
        re.push_str(&regex::escape(&rest[..open]));
        re.push_str("([^/]+)");
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        rest = &rest[close..];
    }
    re.push_str(&regex::escape(rest));
    re.push_str(r"\z");
    Regex::new(&re)
}

impl PathPattern {
    /// Parses `@<alias>/<pattern>` (§6 steps 1–3). Errors carry the spec wording, prefixed with
    /// `pathPattern "<p>": ` as upstream does. Whether the alias is declared is checked by the caller.
    pub fn parse(pattern: &str) -> Result<PathPattern, String> {
        let format_error = || format!("invalid pathPattern format: {pattern}");
        let (head, rest) = pattern.split_once('/').ok_or_else(format_error)?;
        let alias = head.strip_prefix('@').ok_or_else(format_error)?;

        let mut captures: Vec<String> = Vec::new();
        let bytes = rest.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => {
                    let Some(len) = rest[i + 1..].find('}') else {
                        return Err(format!(
                            "pathPattern {pattern:?}: invalid capture starting at offset {i}: \
                             missing closing brace"
                        ));
                    };
                    let name = &rest[i + 1..i + 1 + len];
                    if name.is_empty() {
                        return Err(format!("pathPattern {pattern:?}: empty capture variable"));
                    }
                    if !is_capture_name(name) {
                        return Err(format!(
                            "pathPattern {pattern:?}: capture variable {name:?} must be a valid capture name \
                             matching [A-Za-z_][A-Za-z0-9_]*"
                        ));
                    }
                    if captures.iter().any(|c| c == name) {
                        return Err(format!(
                            "pathPattern {pattern:?}: duplicate capture variable {name:?}"
                        ));
                    }
                    captures.push(name.to_string());
                    i += len + 2;
                }
                b'}' => {
                    return Err(format!(
                        "pathPattern {pattern:?}: invalid capture ending at offset {i}: missing opening brace"
                    ));
                }
                _ => i += 1,
            }
        }
        // Captures become label keys (§6 step 7); checked after the syntax pass, as upstream.
        if let Some(name) = captures.iter().find(|c| !is_label_key(c)) {
            return Err(format!(
                "pathPattern {pattern:?}: capture variable {name:?} is not a valid Kubernetes label key: \
                 the name part {LABEL_NAME_RULE}"
            ));
        }
        let compile_error =
            |e: regex::Error| format!("pathPattern {pattern:?}: failed to compile path pattern: {e}");
        Ok(PathPattern {
            alias: alias.to_string(),
            raw: pattern.to_string(),
            captures,
            regex: fragment_regex(rest).map_err(compile_error)?,
            segments: rest
                .split('/')
                .map(fragment_regex)
                .collect::<Result<_, _>>()
                .map_err(compile_error)?,
        })
    }

    /// Capture names in pattern order.
    pub fn captures(&self) -> &[String] {
        &self.captures
    }

    /// The pattern as written in the spec.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Raw captured values if the alias-relative directory path `dir` matches the whole pattern
    /// (leftmost-first, so `{a}-{b}` on `x-y-z` gives `x-y` and `z`).
    pub fn match_dir(&self, dir: &str) -> Option<Vec<String>> {
        let caps = self.regex.captures(dir)?;
        Some(
            caps.iter()
                .skip(1)
                .map(|m| m.map_or("", |m| m.as_str()).to_string())
                .collect(),
        )
    }
}

/// Go's `strings.ToLower`: per character simple lower-casing (so `İ` becomes `i`, no final-sigma rule).
fn to_lower_go(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\u{130}' {
                return 'i';
            }
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        })
        .collect()
}

/// Finds the matching directories below `root` (§6 step 4): directories only, symlinks not followed, in
/// walk order (depth-first pre-order, siblings by name bytes). Returns `(dir, raw captures)`. Names that
/// are not UTF-8 can match no pattern and are skipped. I/O errors are returned (not terminal, §6 step 4).
pub fn discover(root: &Dir, pp: &PathPattern) -> Result<Vec<(String, Vec<String>)>, io::Error> {
    let mut out = Vec::new();
    walk(root, "", 0, pp, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Dir,
    prefix: &str,
    depth: usize,
    pp: &PathPattern,
    out: &mut Vec<(String, Vec<String>)>,
) -> io::Result<()> {
    let segment = &pp.segments[depth];
    let mut children = Vec::new();
    for entry in dir.entries()? {
        let entry = entry?;
        // DirEntry::file_type does not follow symlinks.
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if segment.is_match(&name) {
            children.push((name, entry));
        }
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in children {
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if depth + 1 == pp.segments.len() {
            if let Some(values) = pp.match_dir(&rel) {
                out.push((rel, values));
            }
        } else {
            walk(&entry.open_dir()?, &rel, depth + 1, pp, out)?;
        }
    }
    Ok(())
}

/// Which `{…}` groups of a template are placeholders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `name`, `to`: every `{…}`; unbalanced braces are errors.
    Every,
    /// `from`: only `{ident}`; other groups (`{yaml,yml}`) and escaped characters belong to the glob.
    Idents,
}

fn render(tmpl: &str, mode: Mode, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(tmpl.len());
    let mut i = 0;
    while i < tmpl.len() {
        let rest = &tmpl[i..];
        let c = rest.chars().next().unwrap_or_default();
        match c {
            '\\' if mode == Mode::Idents => {
                let len = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
                out.push_str(&rest[..len]);
                i += len;
                continue;
            }
            '{' => match (rest[1..].find('}'), mode) {
                (None, Mode::Every) => {
                    return Err(format!(
                        "invalid template {tmpl:?}: capture starting at offset {i} is missing closing brace"
                    ));
                }
                (Some(len), _) => {
                    let name = &rest[1..1 + len];
                    if mode == Mode::Every && name.is_empty() {
                        return Err(format!("invalid template {tmpl:?}: empty capture variable"));
                    }
                    if mode == Mode::Every && !is_capture_name(name) {
                        return Err(format!(
                            "invalid template {tmpl:?}: capture variable {name:?} must be a valid \
                             capture name matching [A-Za-z_][A-Za-z0-9_]*"
                        ));
                    }
                    if is_capture_name(name) {
                        let value = lookup(name).ok_or_else(|| {
                            format!(
                                "invalid template {tmpl:?}: capture variable {name:?} is not defined by \
                                 pathPattern"
                            )
                        })?;
                        out.push_str(&value);
                        i += len + 2;
                        continue;
                    }
                }
                (None, Mode::Idents) => {}
            },
            '}' if mode == Mode::Every => {
                return Err(format!(
                    "invalid template {tmpl:?}: capture ending at offset {i} is missing opening brace"
                ));
            }
            _ => {}
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(out)
}

fn render_artifact(
    a: &OutputArtifact,
    normalized: &dyn Fn(&str) -> Option<String>,
    raw: &dyn Fn(&str) -> Option<String>,
) -> Result<OutputArtifact, String> {
    let copy = a
        .copy
        .iter()
        .map(|op| {
            Ok(CopyOperation {
                from: render(&op.from, Mode::Idents, raw)?,
                to: render(&op.to, Mode::Every, raw)?,
                ..op.clone()
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(OutputArtifact {
        name: render(&a.name, Mode::Every, normalized)?,
        copy,
        ..a.clone()
    })
}

/// `template` with every placeholder replaced by a plain segment name (spec §2.7: rows 7–11 check
/// templates that way). `from` selects `from` rules (only `{ident}`); otherwise every `{…}` counts. Text
/// that does not render (unbalanced braces) is returned unchanged: [`check_templates`] reports it.
pub fn sample(template: &str, from: bool) -> String {
    let mode = if from { Mode::Idents } else { Mode::Every };
    render(template, mode, &|_| Some(SAMPLE.to_string())).unwrap_or_else(|_| template.to_string())
}

/// Placeholder checks without directories (§6 step 6; validate runs them, spec §2.7 last row): every
/// placeholder of `name`, `to` and `from` is a capture of `pp` and every brace is balanced.
pub fn check_templates(pp: &PathPattern, artifacts: &[OutputArtifact]) -> Result<(), String> {
    let known: HashSet<&str> = pp.captures.iter().map(String::as_str).collect();
    let lookup = |name: &str| known.contains(name).then(|| SAMPLE.to_string());
    for a in artifacts {
        render_artifact(a, &lookup, &lookup).map_err(|e| {
            format!(
                "pathPattern {:?}: failed to render artifact {}: {e}",
                pp.raw, a.name
            )
        })?;
    }
    Ok(())
}

/// Renders every template for every match (§6 steps 5–7): per match in the given (walk) order, per
/// template in spec order. Fails on the first invalid label value, rendering error, invalid rendered
/// name or duplicate name; errors carry the spec wording prefixed with `pathPattern "<p>": `.
pub fn expand(
    pp: &PathPattern,
    artifacts: &[OutputArtifact],
    matches: &[(String, Vec<String>)],
) -> Result<Vec<Expanded>, String> {
    check_templates(pp, artifacts)?;
    let p = &pp.raw;
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut out = Vec::with_capacity(matches.len() * artifacts.len());
    for (dir, raw) in matches {
        if raw.len() != pp.captures.len() {
            return Err(format!(
                "pathPattern {p:?}: match {dir:?} has {} values for {} captures",
                raw.len(),
                pp.captures.len()
            ));
        }
        let normalized: Vec<String> = raw.iter().map(|v| to_lower_go(v)).collect();
        for (name, value) in pp.captures.iter().zip(&normalized) {
            if !is_label_value(value) {
                return Err(format!(
                    "pathPattern {p:?}: captured value {value:?} for variable {name:?} (directory {dir:?}) \
                     is not a valid Kubernetes label value: it {LABEL_NAME_RULE}"
                ));
            }
        }
        let find = |values: &[String], name: &str| {
            pp.captures
                .iter()
                .position(|c| c == name)
                .map(|i| values[i].clone())
        };
        let by_normalized = |name: &str| find(&normalized, name);
        let by_raw = |name: &str| find(raw, name);
        let labels: BTreeMap<String, String> = pp
            .captures
            .iter()
            .cloned()
            .zip(normalized.iter().cloned())
            .collect();
        for a in artifacts {
            let artifact = render_artifact(a, &by_normalized, &by_raw).map_err(|e| {
                format!(
                    "pathPattern {p:?}: failed to render artifact {} for match {dir}: {e}",
                    a.name
                )
            })?;
            if !is_dns1123_subdomain(&artifact.name) {
                return Err(format!(
                    "pathPattern {p:?}: rendered artifact name {:?} is not a valid Kubernetes object name: \
                     it {DNS1123_SUBDOMAIN_RULE}",
                    artifact.name
                ));
            }
            if let Some(prev) = seen.get(&artifact.name) {
                return Err(format!(
                    "pathPattern {p:?}: directories {prev:?} and {dir:?} both resolve to artifact name {:?}",
                    artifact.name
                ));
            }
            seen.insert(artifact.name.clone(), dir);
            out.push(Expanded {
                artifact,
                labels: labels.clone(),
                dir: dir.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Strategy;

    fn pp(p: &str) -> PathPattern {
        PathPattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[track_caller]
    fn parse_err(p: &str) -> String {
        PathPattern::parse(p).unwrap_err()
    }

    fn art(name: &str, from: &str, to: &str) -> OutputArtifact {
        OutputArtifact {
            name: name.into(),
            copy: vec![CopyOperation {
                from: from.into(),
                to: to.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn m(dir: &str, values: &[&str]) -> (String, Vec<String>) {
        (dir.to_string(), values.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn parse_errors_of_step_1_and_2() {
        assert_eq!(
            parse_err("invalid-no-at-sign"),
            "invalid pathPattern format: invalid-no-at-sign"
        );
        assert_eq!(
            parse_err("repo/apps/{app}"),
            "invalid pathPattern format: repo/apps/{app}"
        );
        assert_eq!(parse_err("@repo"), "invalid pathPattern format: @repo");
        assert_eq!(
            parse_err("@repo/apps/{app"),
            r#"pathPattern "@repo/apps/{app": invalid capture starting at offset 5: missing closing brace"#
        );
        assert_eq!(
            parse_err("@repo/apps/app}"),
            r#"pathPattern "@repo/apps/app}": invalid capture ending at offset 8: missing opening brace"#
        );
        assert_eq!(
            parse_err("@repo/apps/{}"),
            r#"pathPattern "@repo/apps/{}": empty capture variable"#
        );
        assert!(
            parse_err("@repo/apps/{app-name}")
                .contains(r#"capture variable "app-name" must be a valid capture name"#)
        );
        assert!(parse_err("@repo/apps/{1app}").contains("must be a valid capture name"));
        assert!(parse_err("@repo/apps/{a{b}}").contains(r#""a{b" must be a valid capture name"#));
        assert_eq!(
            parse_err("@repo/apps/{app}/envs/{app}"),
            r#"pathPattern "@repo/apps/{app}/envs/{app}": duplicate capture variable "app""#
        );
        assert!(
            parse_err("@repo/apps/{_app}")
                .contains(r#"capture variable "_app" is not a valid Kubernetes label key"#)
        );
        assert!(
            parse_err(&format!("@repo/{{{}}}", "a".repeat(64)))
                .contains("is not a valid Kubernetes label key")
        );
        // Syntax errors win over label-key errors, as upstream checks keys after the syntax pass.
        assert!(parse_err("@repo/{_a}/{_a}").contains("duplicate capture variable"));
        // The alias part is not parsed for captures; an empty alias is the caller's "not found".
        assert_eq!(pp("@/x").alias, "");
        assert_eq!(pp("@re{po/x").alias, "re{po");
    }

    #[test]
    fn regex_and_captures() {
        let p = pp("@repo/apps/{app}/envs/{env}");
        assert_eq!(p.alias, "repo");
        assert_eq!(p.captures(), ["app", "env"]);
        assert_eq!(p.as_str(), "@repo/apps/{app}/envs/{env}");
        assert_eq!(
            p.match_dir("apps/auth/envs/dev"),
            Some(vec!["auth".into(), "dev".into()])
        );
        assert_eq!(p.match_dir("apps/auth/envs"), None);
        assert_eq!(p.match_dir("apps/auth/envs/dev/x"), None);
        assert_eq!(p.match_dir("xapps/auth/envs/dev"), None);
        let p = pp("@repo/clusters/{region}-{env}");
        assert_eq!(
            p.match_dir("clusters/eu-west-prod"),
            Some(vec!["eu-west".into(), "prod".into()])
        );
        assert_eq!(p.match_dir("clusters/eu"), None);
        let p = pp("@repo/apps/app-{name}");
        assert_eq!(p.match_dir("apps/app-foo"), Some(vec!["foo".into()]));
        assert_eq!(p.match_dir("apps/bar"), None);
        assert_eq!(p.match_dir("apps/app-"), None);
        // Literal text is literal: no glob or regex meaning.
        let p = pp("@repo/a.b/*/{x}?");
        assert_eq!(p.match_dir("a.b/*/v?"), Some(vec!["v".into()]));
        assert_eq!(p.match_dir("axb/*/v?"), None);
        assert_eq!(p.match_dir("a.b/q/v?"), None);
        let p = pp("@repo/{a}");
        assert_eq!(p.match_dir("x"), Some(vec!["x".into()]));
        assert_eq!(p.match_dir("x/y"), None);
        let p = pp("@repo/apps");
        assert!(p.captures().is_empty());
        assert_eq!(p.match_dir("apps"), Some(vec![]));
    }

    #[test]
    fn go_lowercasing() {
        assert_eq!(to_lower_go("Auth"), "auth");
        assert_eq!(to_lower_go("CAFÉ"), "café");
        assert_eq!(to_lower_go("\u{212A}"), "k"); // Kelvin sign
        assert_eq!(to_lower_go("\u{130}"), "i");
        assert_eq!(to_lower_go("ΟΔΟΣ"), "οδοσ"); // no final sigma
    }

    #[test]
    fn render_modes() {
        let look = |n: &str| (n == "app").then(|| "Web".to_string());
        assert_eq!(render("{app}-x", Mode::Every, &look).unwrap(), "Web-x");
        assert!(
            render("{app", Mode::Every, &look)
                .unwrap_err()
                .contains("missing closing brace")
        );
        assert!(
            render("app}", Mode::Every, &look)
                .unwrap_err()
                .contains("missing opening brace")
        );
        assert!(
            render("{}", Mode::Every, &look)
                .unwrap_err()
                .contains("empty capture variable")
        );
        assert!(
            render("{a-b}", Mode::Every, &look)
                .unwrap_err()
                .contains("must be a valid capture name")
        );
        assert!(
            render("{env}", Mode::Every, &look)
                .unwrap_err()
                .contains(r#""env" is not defined by pathPattern"#)
        );
        let from = |t: &str| render(t, Mode::Idents, &look);
        assert_eq!(
            from("@r/apps/{app}/*.{yaml,yml}").unwrap(),
            "@r/apps/Web/*.{yaml,yml}"
        );
        assert_eq!(from("@r/{a,}/{app}").unwrap(), "@r/{a,}/Web");
        assert_eq!(from("@r/{yaml,{app}}").unwrap(), "@r/{yaml,Web}");
        assert_eq!(from(r"@r/\{app\}").unwrap(), r"@r/\{app\}");
        assert_eq!(from("@r/{app").unwrap(), "@r/{app");
        assert_eq!(from("@r/x}").unwrap(), "@r/x}");
        assert_eq!(from("@r/{}").unwrap(), "@r/{}");
        assert_eq!(from("@r/é{app}ü").unwrap(), "@r/éWebü");
        assert!(
            from("@r/{env}/*.{yaml,yml}")
                .unwrap_err()
                .contains(r#""env" is not defined"#)
        );
        assert_eq!(sample("@artifact/{app}/{a-b", false), "@artifact/{app}/{a-b");
        assert_eq!(sample("@artifact/{app}/", false), "@artifact/x/");
        assert_eq!(sample("@g/{app}.tgz", true), "@g/x.tgz");
        assert_eq!(sample("@g/{nope}/*.{a,b}", true), "@g/x/*.{a,b}");
    }

    #[test]
    fn check_templates_without_directories() {
        let p = pp("@repo/apps/{app}");
        assert!(
            check_templates(
                &p,
                &[art("{app}", "@repo/apps/{app}/*.{yaml,yml}", "@artifact/{app}/")]
            )
            .is_ok()
        );
        let err = check_templates(&p, &[art("{app}-{env}", "@repo/apps/{app}/", "@artifact/")]).unwrap_err();
        assert_eq!(
            err,
            concat!(
                r#"pathPattern "@repo/apps/{app}": failed to render artifact {app}-{env}: "#,
                r#"invalid template "{app}-{env}": capture variable "env" is not defined by pathPattern"#
            )
        );
        assert!(
            check_templates(&p, &[art("{missing}", "@repo/x", "@artifact/")])
                .unwrap_err()
                .contains("is not defined by pathPattern")
        );
        assert!(check_templates(&p, &[art("x", "@repo/{env}", "@artifact/")]).is_err());
        assert!(check_templates(&p, &[art("x", "@repo/x", "@artifact/{env}")]).is_err());
        assert!(
            check_templates(&p, &[art("x", "@repo/x", "@artifact/{app")])
                .unwrap_err()
                .contains("missing closing brace")
        );
        assert!(
            check_templates(&p, &[art("x}", "@repo/x", "@artifact/")])
                .unwrap_err()
                .contains("missing opening brace")
        );
        // Names without placeholders are fine here (collisions show up when expanding).
        assert!(check_templates(&p, &[art("static", "@repo/x", "@artifact/")]).is_ok());
    }

    #[test]
    fn expansion_order_labels_and_untouched_fields() {
        let p = pp("@repo/apps/{app}/envs/{env}");
        let mut t1 = art(
            "{app}-{env}",
            "@repo/apps/{app}/envs/{env}/*.{yaml,yml}",
            "@artifact/{app}/{env}/",
        );
        t1.copy[0].exclude = vec!["{app}.txt".into(), "*.md".into()];
        t1.copy[0].strategy = Some(Strategy::Merge);
        t1.copy[0].optional = true;
        t1.revision = Some("@repo".into());
        t1.origin_revision = Some("@repo".into());
        let t2 = art("all-{app}-{env}", "@repo/apps/{app}/**", "@artifact/");
        let matches = [
            m("apps/Auth/envs/Dev", &["Auth", "Dev"]),
            m("apps/b/envs/p", &["b", "p"]),
        ];
        let out = expand(&p, &[t1.clone(), t2], &matches).unwrap();
        let names: Vec<&str> = out.iter().map(|e| e.artifact.name.as_str()).collect();
        assert_eq!(names, ["auth-dev", "all-auth-dev", "b-p", "all-b-p"]);
        let first = &out[0];
        assert_eq!(first.dir, "apps/Auth/envs/Dev");
        assert_eq!(
            first.labels,
            BTreeMap::from([("app".into(), "auth".into()), ("env".into(), "dev".into())])
        );
        let c = &first.artifact.copy[0];
        assert_eq!(c.from, "@repo/apps/Auth/envs/Dev/*.{yaml,yml}");
        assert_eq!(c.to, "@artifact/Auth/Dev/");
        assert_eq!(c.exclude, t1.copy[0].exclude);
        assert_eq!((c.strategy, c.optional), (Some(Strategy::Merge), true));
        assert_eq!(first.artifact.revision, t1.revision);
        assert_eq!(first.artifact.origin_revision, t1.origin_revision);
        assert!(
            expand(&p, &[art("{app}", "@repo/x", "@artifact/")], &[])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn expansion_errors() {
        let p = pp("@repo/apps/{app}");
        let t = [art("app-{app}", "@repo/apps/{app}", "@artifact/")];
        for bad in [".hidden", "my app", &"a".repeat(64), "Café", "-x", "x_"] {
            let err = expand(
                &p,
                &t,
                &[m("apps/good", &["good"]), m(&format!("apps/{bad}"), &[bad])],
            )
            .unwrap_err();
            assert!(
                err.contains("is not a valid Kubernetes label value"),
                "{bad}: {err}"
            );
        }
        assert!(expand(&p, &t, &[m("apps/K", &["\u{212A}"])]).is_ok());
        let err = expand(&p, &t, &[m("apps/Auth", &["Auth"]), m("apps/auth", &["auth"])]).unwrap_err();
        assert_eq!(
            err,
            concat!(
                r#"pathPattern "@repo/apps/{app}": directories "apps/Auth" and "apps/auth" "#,
                r#"both resolve to artifact name "app-auth""#
            )
        );
        let err = expand(
            &p,
            &[art("static", "@repo/x", "@artifact/")],
            &[m("apps/a", &["a"]), m("apps/b", &["b"])],
        )
        .unwrap_err();
        assert!(
            err.contains(r#"directories "apps/a" and "apps/b" both resolve to artifact name "static""#),
            "{err}"
        );
        let err = expand(
            &p,
            &[art("{app}..invalid", "@repo/x", "@artifact/")],
            &[m("apps/auth", &["auth"])],
        )
        .unwrap_err();
        assert!(
            err.contains(r#"rendered artifact name "auth..invalid" is not a valid Kubernetes object name"#)
        );
        assert!(
            expand(
                &p,
                &[art("{app}", "@repo/x", "@artifact/")],
                &[m("apps/my_app", &["my_app"])]
            )
            .unwrap_err()
            .contains("not a valid Kubernetes object name")
        );
        assert!(expand(&p, &[art("{app}", "@repo/x", "@artifact/")], &[m("apps/a", &[])]).is_err());
        let long = "a".repeat(63);
        let out = expand(
            &p,
            &[art("{app}", "@repo/x", "@artifact/")],
            &[m(&format!("apps/{long}"), &[&long])],
        )
        .unwrap();
        assert_eq!(out[0].artifact.name, long);
    }

    fn write_tree(root: &std::path::Path, tree: &serde_json::Value) {
        for (key, value) in tree.as_object().unwrap() {
            let path = root.join(key.trim_end_matches('/'));
            if key.ends_with('/') {
                std::fs::create_dir_all(&path).unwrap();
                continue;
            }
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            match value {
                serde_json::Value::String(s) => std::fs::write(&path, s).unwrap(),
                serde_json::Value::Object(o) if o.contains_key("symlink") => {
                    std::os::unix::fs::symlink(o["symlink"].as_str().unwrap(), &path).unwrap()
                }
                serde_json::Value::Object(o) if o.contains_key("content") => {
                    std::fs::write(&path, o["content"].as_str().unwrap()).unwrap()
                }
                other => panic!("unsupported tree entry {key}: {other}"),
            }
        }
    }

    fn open(path: &std::path::Path) -> Dir {
        Dir::open_ambient_dir(path, cap_std::ambient_authority()).unwrap()
    }

    #[test]
    fn discovery_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = serde_json::json!({
            "apps/b/": {}, "apps/a/envs/": {}, "apps/A/": {}, "apps/_x/": {}, "apps/file": "f",
            "apps/a/deeper/more/": {}, "apps/link": {"symlink": "a"}, "apps/a.b/": {}, "other/c/": {},
            "apps/Z/": {},
        });
        write_tree(tmp.path(), &tree);
        let root = open(tmp.path());
        let found = discover(&root, &pp("@s/apps/{app}")).unwrap();
        let dirs: Vec<&str> = found.iter().map(|(d, _)| d.as_str()).collect();
        // Byte order: upper case before '_' before lower case; no file, no symlink.
        assert_eq!(
            dirs,
            ["apps/A", "apps/Z", "apps/_x", "apps/a", "apps/a.b", "apps/b"]
        );
        assert_eq!(found[0].1, ["A"]);
        let found = discover(&root, &pp("@s/{top}/{app}")).unwrap();
        let dirs: Vec<&str> = found.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "apps/A", "apps/Z", "apps/_x", "apps/a", "apps/a.b", "apps/b", "other/c"
            ]
        );
        let found = discover(&root, &pp("@s/{x}")).unwrap();
        assert_eq!(
            found.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
            ["apps", "other"]
        );
        assert!(discover(&root, &pp("@s/nothing/{x}")).unwrap().is_empty());
        assert!(discover(&root, &pp("@s/")).unwrap().is_empty());
        assert!(discover(&root, &pp("@s/apps/{app}/")).unwrap().is_empty());
        let found = discover(&root, &pp("@s/apps/a/{x}/more")).unwrap();
        assert_eq!(found, [m("apps/a/deeper/more", &["deeper"])]);
        // Walk order across depths: depth-first pre-order.
        let tmp2 = tempfile::tempdir().unwrap();
        write_tree(
            tmp2.path(),
            &serde_json::json!({"a/x/": {}, "a.b/x/": {}, "a/y/": {}, "b/x/": {}}),
        );
        let found = discover(&open(tmp2.path()), &pp("@s/{p}/{q}")).unwrap();
        let dirs: Vec<&str> = found.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dirs, ["a/x", "a/y", "a.b/x", "b/x"]);
    }

    #[test]
    fn discovery_does_not_follow_symlinked_directories_below() {
        let tmp = tempfile::tempdir().unwrap();
        write_tree(
            tmp.path(),
            &serde_json::json!({"real/envs/dev/": {}, "apps/l": {"symlink": "../real"}}),
        );
        let root = open(tmp.path());
        assert!(
            discover(&root, &pp("@s/apps/{app}/envs/{env}"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            discover(&root, &pp("@s/real/envs/{env}")).unwrap(),
            [m("real/envs/dev", &["dev"])]
        );
    }

    /// Artifact names with their labels, in order.
    type Named = Vec<(String, BTreeMap<String, String>)>;

    /// Every generator case of pathpattern.yaml: validate, discover in a materialized tree, expand, and
    /// compare names and labels (commonMetadata.labels overlaid with the captures, minus the two
    /// controller-owned keys, §12.1). File contents are the staging tests' business.
    #[test]
    fn conformance_pathpattern_cases() {
        let text = include_str!("../../tests/cases/pathpattern.yaml");
        let file: serde_json::Value = yaml_serde::from_str(text).unwrap();
        let mut ran = 0;
        for case in file["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let generator = &case["generator"];
            let sources = case["sources"].as_object().unwrap();
            let mut spec = serde_json::json!({
                "sources": sources.keys().map(|a| serde_json::json!({
                    "alias": a, "kind": "GitRepository", "name": a.replace('_', "-"),
                })).collect::<Vec<_>>(),
                "artifacts": generator["artifacts"],
            });
            if let Some(p) = generator["pathPattern"].as_str().filter(|p| !p.is_empty()) {
                spec["pathPattern"] = p.into();
            }
            if !generator["commonMetadata"].is_null() {
                spec["commonMetadata"] = generator["commonMetadata"].clone();
            }
            let manifest = serde_json::json!({
                "apiVersion": crate::spec::API_VERSION, "kind": crate::spec::KIND,
                "metadata": {"name": "x", "namespace": "conformance"}, "spec": spec,
            });
            let m = crate::spec::parse_manifest(&manifest.to_string()).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            for (alias, tree) in sources {
                let dir = tmp.path().join(alias);
                std::fs::create_dir_all(&dir).unwrap();
                write_tree(&dir, tree);
            }

            // What `artgen build` does before staging: validate, then expand the pattern (if any).
            let validated = crate::validate::validate(&m.spec, "conformance", &Default::default());
            let expanded: Result<Named, String> = match &validated {
                Err(e) => Err(e.to_string()),
                Ok(()) => match crate::validate::path_pattern(&m.spec).unwrap() {
                    None => Ok(m
                        .spec
                        .artifacts
                        .iter()
                        .map(|a| (a.name.clone(), BTreeMap::new()))
                        .collect()),
                    Some(p) => {
                        let root = open(&tmp.path().join(&p.alias));
                        let found = discover(&root, &p).unwrap();
                        expand(&p, &m.spec.artifacts, &found)
                            .map(|v| v.into_iter().map(|e| (e.artifact.name, e.labels)).collect())
                    }
                },
            };
            // The pathPattern stage alone (bypassing admission), whose wording the phrase hints at.
            let stage_error = || -> Option<String> {
                let p = match PathPattern::parse(m.spec.path_pattern.as_deref()?) {
                    Ok(p) => p,
                    Err(e) => return Some(e),
                };
                let found = discover(&open(&tmp.path().join(&p.alias)), &p).unwrap();
                expand(&p, &m.spec.artifacts, &found).err()
            };

            let expect = &case["expect"];
            if let Some(phrase) = expect["error"].as_str() {
                if phrase == "does not exist" {
                    // A copy-time error: expansion itself succeeds.
                    assert!(expanded.is_ok(), "{name}: {expanded:?}");
                } else {
                    assert!(expanded.is_err(), "{name}: expected an error, got {expanded:?}");
                    let err = stage_error().unwrap_or_else(|| panic!("{name}: the pathPattern stage passed"));
                    assert!(
                        err.to_lowercase().contains(phrase),
                        "{name}: {err:?} should contain {phrase:?}"
                    );
                }
            } else {
                let got = expanded.unwrap_or_else(|e| panic!("{name}: {e}"));
                let common: BTreeMap<String, String> =
                    serde_json::from_value(generator["commonMetadata"]["labels"].clone()).unwrap_or_default();
                let want: Named = expect["artifacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a["name"].as_str().unwrap().to_string(),
                            serde_json::from_value(a["labels"].clone()).unwrap(),
                        )
                    })
                    .collect();
                let got: Named = got
                    .into_iter()
                    .map(|(n, captures)| {
                        let mut labels = common.clone();
                        labels.extend(captures);
                        labels.remove("app.kubernetes.io/managed-by");
                        labels.remove("source.extensions.fluxcd.io/generator");
                        (n, labels)
                    })
                    .collect();
                assert_eq!(got, want, "{name}");
            }
            ran += 1;
        }
        assert!(ran >= 20, "{ran}");
    }
}
