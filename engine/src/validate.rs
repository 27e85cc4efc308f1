//! Spec validation: admission (spec §2.1–2.4, §2.6: what the API server enforces with our CRD),
//! controller-side validation (§2.7, terminal) and the static pathPattern checks (§6 steps 1–2 and 6).
//! `artgen validate`, `artgen build` and the controller all call these, so a manifest is judged the same
//! way everywhere. Also home of the Kubernetes name rules, shared by every module that needs them.

use std::collections::HashSet;

use crate::error::Error;
use crate::fetch::is_tarball_name;
use crate::spec::{
    ArtifactGeneratorSpec, CopyOperation, OutputArtifact, SourceReference, Strategy, Transform,
};
use crate::stage::path_pattern::{self, PathPattern};
use crate::stage::pattern::{self, Glob};

/// Controller flags that change validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `--no-cross-namespace-refs` (§2.7 row 2).
    pub no_cross_namespace_refs: bool,
}

const ACCESS_DENIED: &str = "AccessDenied";

pub const ALIAS_PATTERN: &str = "^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$";
pub const SOURCE_REF_PATTERN: &str = "^@([a-z0-9]([a-z0-9_-]*[a-z0-9])?)/(.*)$";
pub const ALIAS_REF_PATTERN: &str = "^@([a-z0-9]([a-z0-9_-]*[a-z0-9])?)$";
pub const ARTIFACT_REF_PATTERN: &str = "^@(artifact)/(.*)$";
pub const DNS1123_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
pub const DIGEST_PATTERN: &str = "^sha256:[a-f0-9]{64}$";
/// CEL rule message on `.spec` (§2.1).
pub const CEL_NAMES_MESSAGE: &str =
    "artifact names must be valid Kubernetes object names when pathPattern is not set";

// ---------------------------------------------------------------------------------------------------
// Kubernetes name rules (apimachinery validation), hand-written: they run for every name and value.

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// DNS-1123 label: at most 63 characters of `[-a-z0-9]`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// DNS-1123 subdomain (Kubernetes object names): at most 253 characters, dot-separated DNS-1123 label
/// syntax (no per-label length limit, as apimachinery's `IsDNS1123Subdomain`).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && matches_dns1123_subdomain(s)
}

/// The DNS-1123 subdomain regex alone, without the length limit (what the CEL rule of §2.1 checks).
fn matches_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && is_lower_alnum(b[0])
                && is_lower_alnum(b[b.len() - 1])
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        })
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters: the name part of a label key and
/// any non-empty label value.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Label key (`IsQualifiedName`): `[prefix/]name`, prefix a DNS-1123 subdomain, name per
/// [`LABEL_NAME_RULE`].
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        None => is_qualified_name_part(s),
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
    }
}

/// Label value: empty, or per [`LABEL_NAME_RULE`].
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// Human wording of the label name/value rule, for messages.
pub const LABEL_NAME_RULE: &str = "must be at most 63 characters of alphanumerics, '-', '_' or '.', \
     starting and ending with an alphanumeric character";
/// Human wording of the object name rule, for messages.
pub const DNS1123_SUBDOMAIN_RULE: &str = "must be at most 253 characters of lower-case alphanumerics, '-' or \
     '.', each dot-separated part starting and ending with an alphanumeric character";

/// Source alias syntax (`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`, §2.2); the 63-character limit is separate.
pub fn is_alias(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-' || c == b'_')
}

/// Splits `@alias/path` at the first `/` into `(alias, path)`; `None` without the `@` or the `/`. No
/// syntax check of the alias (admission does that).
pub fn split_ref(s: &str) -> Option<(&str, &str)> {
    s.strip_prefix('@')?.split_once('/')
}

/// Whether `s` matches `^@(alias)/(.*)$` (RE2: `.` excludes newlines).
fn is_source_ref(s: &str) -> bool {
    split_ref(s).is_some_and(|(alias, path)| is_alias(alias) && !path.contains('\n'))
}

/// The cleaned path leaves its root (first component `..`), or the raw path is absolute (§2.7 rows 8–9).
/// A name merely starting with `..` (`..foo`) stays inside.
pub fn escapes_root(path: &str) -> bool {
    let cleaned = pattern::clean(path);
    path.starts_with('/') || cleaned == ".." || cleaned.starts_with("../")
}

fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn has_path_pattern(spec: &ArtifactGeneratorSpec) -> bool {
    spec.path_pattern.as_deref().is_some_and(|p| !p.is_empty())
}

// ---------------------------------------------------------------------------------------------------

/// Everything `artgen validate` checks (§12.2): admission, then controller-side validation (§2.7 rows
/// 1, 3–11 and row 2 when the option is set), then the pathPattern syntax, alias and placeholder checks.
/// Returns the FIRST failure: [`Error::Invalid`] with a JSON-path field, or [`Error::PathPattern`].
pub fn validate(spec: &ArtifactGeneratorSpec, namespace: &str, opts: &Options) -> Result<(), Error> {
    admission(spec)?;
    controller_side(spec, namespace, opts)?;
    path_pattern(spec)?;
    Ok(())
}

fn items(field: &str, len: usize, min: usize, max: Option<usize>) -> Result<(), Error> {
    let ok = len >= min && max.is_none_or(|max| len <= max);
    if ok {
        return Ok(());
    }
    let message = match max {
        Some(max) if min > 0 => format!("must have between {min} and {max} items, got {len}"),
        Some(max) => format!("must have at most {max} items, got {len}"),
        None => format!("must have at least {min} item(s), got {len}"),
    };
    Err(Error::invalid(field, message))
}

/// OpenAPI lengths count characters, not bytes.
fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The OpenAPI constraints and the CEL rule of §2.1–2.4 (and the schema parts of design/plugins.md §2),
/// i.e. what the API server would reject on `kubectl apply` with our CRD. Unknown fields and wrong types
/// are rejected earlier, by [`crate::spec::parse_manifest`].
pub fn admission(spec: &ArtifactGeneratorSpec) -> Result<(), Error> {
    items("spec.sources", spec.sources.len(), 1, Some(1000))?;
    for (i, source) in spec.sources.iter().enumerate() {
        admit_source(&format!("spec.sources[{i}]"), source)?;
    }
    items("spec.artifacts", spec.artifacts.len(), 1, Some(1000))?;
    for (i, artifact) in spec.artifacts.iter().enumerate() {
        admit_artifact(&format!("spec.artifacts[{i}]"), artifact)?;
    }
    // An explicit `pathPattern: ""` is validated against the pattern too, as the API server does.
    if let Some(p) = &spec.path_pattern
        && (chars(p) > 1024 || !is_source_ref(p))
    {
        return Err(Error::invalid(
            "spec.pathPattern",
            format!("must match {SOURCE_REF_PATTERN} and be at most 1024 characters"),
        ));
    }
    if !has_path_pattern(spec) && !spec.artifacts.iter().all(|a| matches_dns1123_subdomain(&a.name)) {
        return Err(Error::invalid("spec", CEL_NAMES_MESSAGE));
    }
    Ok(())
}

fn admit_source(field: &str, s: &SourceReference) -> Result<(), Error> {
    if chars(&s.alias) > 63 || !is_alias(&s.alias) {
        return Err(Error::invalid(
            format!("{field}.alias"),
            format!("must match {ALIAS_PATTERN} and be at most 63 characters"),
        ));
    }
    if !is_dns1123_subdomain(&s.name) {
        return Err(Error::invalid(
            format!("{field}.name"),
            format!(
                "must be a DNS-1123 subdomain of 1 to 253 characters (regex {DNS1123_SUBDOMAIN_PATTERN})"
            ),
        ));
    }
    if let Some(ns) = &s.namespace
        && !is_dns1123_label(ns)
    {
        return Err(Error::invalid(
            format!("{field}.namespace"),
            format!("must match {DNS1123_LABEL_PATTERN} and be 1 to 63 characters"),
        ));
    }
    Ok(())
}

fn admit_artifact(field: &str, a: &OutputArtifact) -> Result<(), Error> {
    let len = chars(&a.name);
    if !(1..=253).contains(&len) {
        return Err(Error::invalid(
            format!("{field}.name"),
            "must be 1 to 253 characters",
        ));
    }
    for (key, value) in [("revision", &a.revision), ("originRevision", &a.origin_revision)] {
        if let Some(v) = value
            && (chars(v) > 64 || !v.strip_prefix('@').is_some_and(is_alias))
        {
            return Err(Error::invalid(
                format!("{field}.{key}"),
                format!("must match {ALIAS_REF_PATTERN} and be at most 64 characters"),
            ));
        }
    }
    items(&format!("{field}.copy"), a.copy.len(), 1, None)?;
    for (j, op) in a.copy.iter().enumerate() {
        admit_copy(&format!("{field}.copy[{j}]"), op)?;
    }
    items(&format!("{field}.transforms"), a.transforms.len(), 0, Some(16))?;
    for (k, t) in a.transforms.iter().enumerate() {
        admit_transform(&format!("{field}.transforms[{k}]"), t)?;
    }
    Ok(())
}

fn admit_copy(field: &str, op: &CopyOperation) -> Result<(), Error> {
    if !(1..=1024).contains(&chars(&op.from)) || !is_source_ref(&op.from) {
        return Err(Error::invalid(
            format!("{field}.from"),
            format!("must match {SOURCE_REF_PATTERN} and be 1 to 1024 characters"),
        ));
    }
    let to_ok = op
        .to
        .strip_prefix(crate::spec::ARTIFACT_PREFIX)
        .is_some_and(|dest| !dest.contains('\n'));
    if !(1..=1024).contains(&chars(&op.to)) || !to_ok {
        return Err(Error::invalid(
            format!("{field}.to"),
            format!("must match {ARTIFACT_REF_PATTERN} and be 1 to 1024 characters"),
        ));
    }
    items(&format!("{field}.exclude"), op.exclude.len(), 0, Some(100))
}

fn admit_transform(field: &str, t: &Transform) -> Result<(), Error> {
    if !is_dns1123_label(&t.name) {
        return Err(Error::invalid(
            format!("{field}.name"),
            format!("must be a DNS-1123 label ({DNS1123_LABEL_PATTERN}, at most 63 characters)"),
        ));
    }
    if !is_sha256_digest(&t.plugin.digest) {
        return Err(Error::invalid(
            format!("{field}.plugin.digest"),
            format!("must match {DIGEST_PATTERN}"),
        ));
    }
    if t.config.as_ref().is_some_and(|c| !c.is_object()) {
        return Err(Error::invalid(format!("{field}.config"), "must be an object"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------

/// Controller-side validation (§2.7), terminal on failure: sources in spec order (rows 1–2), then
/// artifacts in spec order — per artifact rows 3–6, then rows 7–11 per copy operation, then the transforms
/// rules of design/plugins.md §2. Row 2 only with [`Options::no_cross_namespace_refs`]. With pathPattern,
/// rows 7–11 see the templates with every placeholder replaced by a plain segment name.
pub fn controller_side(spec: &ArtifactGeneratorSpec, namespace: &str, opts: &Options) -> Result<(), Error> {
    let mut aliases: HashSet<&str> = HashSet::new();
    for (i, s) in spec.sources.iter().enumerate() {
        if !aliases.insert(&s.alias) {
            return Err(Error::invalid(
                format!("spec.sources[{i}].alias"),
                format!("duplicate source alias '{}' found", s.alias),
            ));
        }
        if opts.no_cross_namespace_refs
            && let Some(ns) = &s.namespace
            && ns != namespace
        {
            return Err(Error::Invalid {
                field: format!("spec.sources[{i}].namespace"),
                message: format!(
                    "cross-namespace reference to source {}/{}/{} is not allowed",
                    s.kind, ns, s.name
                ),
                reason: ACCESS_DENIED,
            });
        }
    }

    let templated = has_path_pattern(spec);
    let mut names: HashSet<&str> = HashSet::new();
    for (i, a) in spec.artifacts.iter().enumerate() {
        let field = format!("spec.artifacts[{i}]");
        let n = &a.name;
        if !names.insert(n) {
            return Err(Error::invalid(
                format!("{field}.name"),
                format!("duplicate artifact name '{n}' found"),
            ));
        }
        if !templated && !is_dns1123_subdomain(n) {
            return Err(Error::invalid(
                format!("{field}.name"),
                format!("invalid artifact name '{n}'"),
            ));
        }
        for (key, value) in [("revision", &a.revision), ("originRevision", &a.origin_revision)] {
            if let Some(v) = value {
                let alias = v.strip_prefix('@').unwrap_or(v);
                if !aliases.contains(alias) {
                    return Err(Error::invalid(
                        format!("{field}.{key}"),
                        format!("artifact {n} {key} source alias '{alias}' not found"),
                    ));
                }
            }
        }
        for (j, op) in a.copy.iter().enumerate() {
            check_copy(&format!("{field}.copy[{j}]"), n, j, op, &aliases, templated)?;
        }
        check_transforms(&field, a, &aliases)?;
    }
    Ok(())
}

/// §2.7 rows 7–11 for one copy operation.
fn check_copy(
    field: &str,
    n: &str,
    j: usize,
    op: &CopyOperation,
    aliases: &HashSet<&str>,
    templated: bool,
) -> Result<(), Error> {
    let at = |suffix: &str, message: String| Error::invalid(format!("{field}.{suffix}"), message);
    let (from, to) = if templated {
        (
            path_pattern::sample(&op.from, true),
            path_pattern::sample(&op.to, false),
        )
    } else {
        (op.from.clone(), op.to.clone())
    };
    // Messages quote what the user wrote, not the sample rendering.
    let raw_path = split_ref(&op.from).map_or(op.from.as_str(), |(_, p)| p);
    let raw_dest = op.to.strip_prefix(crate::spec::ARTIFACT_PREFIX).unwrap_or(&op.to);

    // Row 7. Without admission (controller API objects are admitted already) a malformed `from` lands here.
    let Some((alias, path)) = split_ref(&from) else {
        return Err(at(
            "from",
            format!("must match {SOURCE_REF_PATTERN} and be 1 to 1024 characters"),
        ));
    };
    if !aliases.contains(alias) {
        return Err(at(
            "from",
            format!("artifact {n} copy[{j}]: source alias '{alias}' not found"),
        ));
    }
    // Row 8.
    if escapes_root(path) {
        return Err(at(
            "from",
            format!("artifact {n} copy[{j}]: source path '{raw_path}' escapes the source root"),
        ));
    }
    // Row 9.
    let Some(dest) = to.strip_prefix(crate::spec::ARTIFACT_PREFIX) else {
        return Err(at(
            "to",
            format!("must match {ARTIFACT_REF_PATTERN} and be 1 to 1024 characters"),
        ));
    };
    if escapes_root(dest) {
        return Err(at(
            "to",
            format!("artifact {n} copy[{j}]: destination '{raw_dest}' escapes the artifact root"),
        ));
    }
    // Row 10.
    let glob = pattern::is_glob(path);
    if glob && Glob::from_path(path).is_err() {
        return Err(at(
            "from",
            format!("artifact {n} copy[{j}]: invalid glob pattern '{raw_path}'"),
        ));
    }
    for (k, x) in op.exclude.iter().enumerate() {
        if Glob::new(x).is_err() {
            return Err(at(
                &format!("exclude[{k}]"),
                format!("artifact {n} copy[{j}]: invalid exclude pattern '{x}'"),
            ));
        }
    }
    // Row 11.
    if op.strategy() == Strategy::Extract && !glob {
        let cleaned = pattern::clean(path);
        let base = cleaned.rsplit('/').next().unwrap_or(&cleaned);
        if !is_tarball_name(base) {
            return Err(at(
                "from",
                format!(
                    "artifact {n} copy[{j}]: extract strategy requires tarball file (.tar.gz or .tgz), \
                     got '{raw_path}'"
                ),
            ));
        }
    }
    Ok(())
}

/// The cross-field transforms rules of design/plugins.md §2 (the schema parts are in [`admission`]).
fn check_transforms(field: &str, a: &OutputArtifact, aliases: &HashSet<&str>) -> Result<(), Error> {
    let n = &a.name;
    let mut names: HashSet<&str> = HashSet::new();
    for (k, t) in a.transforms.iter().enumerate() {
        let field = format!("{field}.transforms[{k}]");
        let what = format!("artifact {n} transforms[{k}]");
        if !names.insert(&t.name) {
            return Err(Error::invalid(
                format!("{field}.name"),
                format!("{what}: duplicate transform name '{}'", t.name),
            ));
        }
        let src = &t.plugin.source;
        if !aliases.contains(src.alias.as_str()) {
            return Err(Error::invalid(
                format!("{field}.plugin.source.alias"),
                format!("{what}: plugin source alias '{}' not found", src.alias),
            ));
        }
        let path_ok = !src.path.is_empty()
            && src.path.len() <= 1024
            && !src.path.starts_with('/')
            && !src.path.split('/').any(|seg| seg == "..");
        if !path_ok {
            return Err(Error::invalid(
                format!("{field}.plugin.source.path"),
                format!(
                    "{what}: plugin path '{}' must be a relative path without '..' of 1 to 1024 bytes",
                    src.path
                ),
            ));
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (r, alias) in t.read_sources.iter().enumerate() {
            let field = format!("{field}.readSources[{r}]");
            if !aliases.contains(alias.as_str()) {
                return Err(Error::invalid(
                    field,
                    format!("{what}: readSources alias '{alias}' not found"),
                ));
            }
            if !seen.insert(alias) {
                return Err(Error::invalid(
                    field,
                    format!("{what}: duplicate readSources alias '{alias}'"),
                ));
            }
        }
    }
    Ok(())
}

/// The pathPattern checks that need no source content (§6 steps 1–2 and 6): format, capture syntax,
/// alias declared, template placeholders. Returns the parsed pattern (`None` when pathPattern is unset or
/// empty) so the build can reuse it. Errors are [`Error::PathPattern`] (BuildFailed + Stalled, §6 step 9).
pub fn path_pattern(spec: &ArtifactGeneratorSpec) -> Result<Option<PathPattern>, Error> {
    let Some(raw) = spec.path_pattern.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let fail = |message: String| Error::PathPattern { message };
    let pp = PathPattern::parse(raw).map_err(fail)?;
    if !spec.sources.iter().any(|s| s.alias == pp.alias) {
        return Err(fail(format!(
            "pathPattern {raw:?}: source alias {} not found in local sources",
            pp.alias
        )));
    }
    path_pattern::check_templates(&pp, &spec.artifacts).map_err(fail)?;
    Ok(Some(pp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PluginRef, PluginSource, SourceKind};

    fn src(alias: &str) -> SourceReference {
        SourceReference {
            alias: alias.into(),
            kind: SourceKind::GitRepository,
            name: "repo".into(),
            namespace: None,
        }
    }

    fn op(from: &str, to: &str) -> CopyOperation {
        CopyOperation {
            from: from.into(),
            to: to.into(),
            ..Default::default()
        }
    }

    fn art(name: &str, copy: Vec<CopyOperation>) -> OutputArtifact {
        OutputArtifact {
            name: name.into(),
            copy,
            ..Default::default()
        }
    }

    fn spec(sources: Vec<SourceReference>, artifacts: Vec<OutputArtifact>) -> ArtifactGeneratorSpec {
        ArtifactGeneratorSpec {
            sources,
            artifacts,
            ..Default::default()
        }
    }

    fn one(copy: Vec<CopyOperation>) -> ArtifactGeneratorSpec {
        spec(vec![src("git")], vec![art("out", copy)])
    }

    fn transform(name: &str) -> Transform {
        Transform {
            name: name.into(),
            plugin: PluginRef {
                source: PluginSource {
                    alias: "git".into(),
                    path: "p.wasm".into(),
                },
                digest: format!("sha256:{}", "a".repeat(64)),
            },
            config: None,
            read_sources: vec![],
            limits: None,
            failure_policy: None,
        }
    }

    /// The first failure as (field, message, reason).
    #[track_caller]
    fn invalid(spec: &ArtifactGeneratorSpec) -> (String, String, &'static str) {
        match validate(spec, "ns", &Options::default()) {
            Err(Error::Invalid {
                field,
                message,
                reason,
            }) => (field, message, reason),
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }

    #[track_caller]
    fn fails_at(spec: &ArtifactGeneratorSpec, field: &str, message: &str) {
        let (f, m, r) = invalid(spec);
        assert_eq!((f.as_str(), m.as_str(), r), (field, message, "ValidationFailed"));
    }

    #[track_caller]
    fn field_fails(spec: &ArtifactGeneratorSpec, field: &str) {
        let (f, m, _) = invalid(spec);
        assert_eq!(f, field, "{m}");
    }

    #[track_caller]
    fn ok(spec: &ArtifactGeneratorSpec) {
        if let Err(e) = validate(spec, "ns", &Options::default()) {
            panic!("expected valid, got {e}");
        }
    }

    #[test]
    fn kubernetes_name_helpers() {
        for s in [
            "a",
            "a-b",
            "0",
            "my.repo",
            "a.b.c",
            &"a".repeat(253),
            &format!("{}.b", "a".repeat(100)),
        ] {
            assert!(is_dns1123_subdomain(s), "{s}");
        }
        for s in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "my_app",
            "a b",
            &"a".repeat(254),
            "é",
        ] {
            assert!(!is_dns1123_subdomain(s), "{s}");
        }
        for s in ["a", "a-b", "0a", &"a".repeat(63)] {
            assert!(is_dns1123_label(s), "{s}");
        }
        for s in ["", "a.b", "A", "-a", "a-", &"a".repeat(64), "a_b"] {
            assert!(!is_dns1123_label(s), "{s}");
        }
        for s in [
            "app",
            "App",
            "a_b",
            "a.b-c",
            "x/app",
            "example.com/a",
            &"a".repeat(63),
        ] {
            assert!(is_label_key(s), "{s}");
        }
        for s in [
            "",
            "_app",
            "app_",
            "-a",
            "a/b/c",
            "/a",
            "A_/b",
            "Example.com/a",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_label_key(s), "{s}");
        }
        for s in ["", "auth", "Auth", "a.b_c-d", &"a".repeat(63)] {
            assert!(is_label_value(s), "{s}");
        }
        for s in [".hidden", "my app", "café", &"a".repeat(64), "a-", "-a", "a/b"] {
            assert!(!is_label_value(s), "{s}");
        }
        for s in ["git_repo-v2", "a", "0", "a_b"] {
            assert!(is_alias(s), "{s}");
        }
        for s in ["", "Invalid-Alias", "_a", "a-", "a.b", "a/b"] {
            assert!(!is_alias(s), "{s}");
        }
        assert_eq!(split_ref("@git/a/b"), Some(("git", "a/b")));
        assert_eq!(split_ref("@git/"), Some(("git", "")));
        assert_eq!(split_ref("@git"), None);
        assert_eq!(split_ref("git/a"), None);
        for p in ["/x", "..", "../x", "a/../../x", "../", "//x"] {
            assert!(escapes_root(p), "{p}");
        }
        for p in ["", ".", "a/../b", "..foo", "a/..", "x/"] {
            assert!(!escapes_root(p), "{p}");
        }
        assert!(is_sha256_digest(&format!("sha256:{}", "0f".repeat(32))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "0F".repeat(32))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "0".repeat(63))));
        assert!(!is_sha256_digest(&format!("sha512:{}", "0".repeat(64))));
    }

    #[test]
    fn admission_sources() {
        field_fails(
            &spec(vec![], vec![art("out", vec![op("@git/", "@artifact/")])]),
            "spec.sources",
        );
        let mut s = one(vec![op("@git/", "@artifact/")]);
        s.sources[0].alias = "Invalid-Alias".into();
        fails_at(
            &s,
            "spec.sources[0].alias",
            "must match ^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$ and be at most 63 characters",
        );
        s.sources[0].alias = "a".repeat(64);
        field_fails(&s, "spec.sources[0].alias");
        s.sources[0].alias = "git".into();
        s.sources[0].name = "my_repo".into();
        field_fails(&s, "spec.sources[0].name");
        s.sources[0].name = String::new();
        field_fails(&s, "spec.sources[0].name");
        s.sources[0].name = "a".repeat(254);
        field_fails(&s, "spec.sources[0].name");
        s.sources[0].name = "my.repo".into();
        ok(&s);
        s.sources[0].namespace = Some(String::new());
        field_fails(&s, "spec.sources[0].namespace");
        s.sources[0].namespace = Some("a.b".into());
        field_fails(&s, "spec.sources[0].namespace");
        s.sources[0].namespace = Some("other".into());
        ok(&s);
        let many = spec(
            (0..1001).map(|i| src(&format!("s{i}"))).collect(),
            vec![art("o", vec![op("@s0/", "@artifact/")])],
        );
        field_fails(&many, "spec.sources");
    }

    #[test]
    fn admission_artifacts() {
        field_fails(&spec(vec![src("git")], vec![]), "spec.artifacts");
        let mut s = one(vec![op("@git/", "@artifact/")]);
        s.artifacts[0].name = String::new();
        field_fails(&s, "spec.artifacts[0].name");
        s.artifacts[0].name = "Invalid Name".into();
        fails_at(&s, "spec", CEL_NAMES_MESSAGE);
        s.artifacts[0].name = "app.v1".into();
        ok(&s);
        s.artifacts[0].revision = Some("git".into());
        fails_at(
            &s,
            "spec.artifacts[0].revision",
            "must match ^@([a-z0-9]([a-z0-9_-]*[a-z0-9])?)$ and be at most 64 characters",
        );
        s.artifacts[0].revision = None;
        s.artifacts[0].origin_revision = Some("@Git".into());
        field_fails(&s, "spec.artifacts[0].originRevision");
        s.artifacts[0].origin_revision = Some(format!("@{}", "a".repeat(64)));
        field_fails(&s, "spec.artifacts[0].originRevision");
        s.artifacts[0].origin_revision = None;
        s.artifacts[0].copy.clear();
        field_fails(&s, "spec.artifacts[0].copy");
    }

    #[test]
    fn admission_copy() {
        for (from, to, field) in [
            ("source/file.yaml", "@artifact/", "spec.artifacts[0].copy[0].from"),
            ("@git", "@artifact/", "spec.artifacts[0].copy[0].from"),
            ("@Git/x", "@artifact/", "spec.artifacts[0].copy[0].from"),
            ("@git/a\nb", "@artifact/", "spec.artifacts[0].copy[0].from"),
            ("@git/x", "@artifacts/", "spec.artifacts[0].copy[0].to"),
            ("@git/x", "@artifact", "spec.artifacts[0].copy[0].to"),
            ("@git/x", "artifact/", "spec.artifacts[0].copy[0].to"),
        ] {
            field_fails(&one(vec![op(from, to)]), field);
        }
        let long = format!("@git/{}", "a".repeat(1020));
        field_fails(
            &one(vec![op(&long, "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        let fits = format!("@git/{}", "a".repeat(1019));
        ok(&one(vec![op(&fits, "@artifact/")]));
        let mut c = op("@git/**", "@artifact/");
        c.exclude = (0..100).map(|i| i.to_string()).collect();
        ok(&one(vec![c.clone()]));
        c.exclude.push("x".into());
        fails_at(
            &one(vec![c]),
            "spec.artifacts[0].copy[0].exclude",
            "must have at most 100 items, got 101",
        );
    }

    #[test]
    fn admission_path_pattern() {
        let mut s = one(vec![op("@git/{app}/", "@artifact/")]);
        s.artifacts[0].name = "{app}".into();
        s.path_pattern = Some("invalid-no-at-sign".into());
        field_fails(&s, "spec.pathPattern");
        s.path_pattern = Some(format!("@git/{}", "a".repeat(1020)));
        field_fails(&s, "spec.pathPattern");
        s.path_pattern = Some(String::new());
        field_fails(&s, "spec.pathPattern");
        s.path_pattern = Some("@git/{app}".into());
        ok(&s);
        // Without pathPattern the CEL rule applies to the template name.
        s.path_pattern = None;
        fails_at(&s, "spec", CEL_NAMES_MESSAGE);
    }

    #[test]
    fn admission_transforms() {
        let mut s = one(vec![op("@git/", "@artifact/")]);
        s.artifacts[0].transforms = (0..16).map(|i| transform(&format!("t{i}"))).collect();
        ok(&s);
        s.artifacts[0].transforms.push(transform("t16"));
        field_fails(&s, "spec.artifacts[0].transforms");
        s.artifacts[0].transforms = vec![transform("Set_Images")];
        field_fails(&s, "spec.artifacts[0].transforms[0].name");
        s.artifacts[0].transforms = vec![transform("a.b")];
        field_fails(&s, "spec.artifacts[0].transforms[0].name");
        let mut t = transform("ok");
        t.plugin.digest = "sha256:6f1c".into();
        s.artifacts[0].transforms = vec![t];
        field_fails(&s, "spec.artifacts[0].transforms[0].plugin.digest");
    }

    #[test]
    fn row_1_duplicate_alias() {
        let s = spec(
            vec![src("a"), src("b"), src("a")],
            vec![art("out", vec![op("@a/", "@artifact/")])],
        );
        fails_at(&s, "spec.sources[2].alias", "duplicate source alias 'a' found");
    }

    #[test]
    fn row_2_cross_namespace_only_with_the_option() {
        let mut s = one(vec![op("@git/", "@artifact/")]);
        s.sources[0].namespace = Some("other".into());
        ok(&s);
        let opts = Options {
            no_cross_namespace_refs: true,
        };
        match validate(&s, "ns", &opts) {
            Err(Error::Invalid {
                field,
                message,
                reason,
            }) => {
                assert_eq!(field, "spec.sources[0].namespace");
                assert_eq!(
                    message,
                    "cross-namespace reference to source GitRepository/other/repo is not allowed"
                );
                assert_eq!(reason, ACCESS_DENIED);
            }
            other => panic!("{other:?}"),
        }
        s.sources[0].namespace = Some("ns".into());
        assert!(validate(&s, "ns", &opts).is_ok());
        s.sources[0].namespace = None;
        assert!(validate(&s, "ns", &opts).is_ok());
        // Row 1 comes first for the same source.
        let mut s = spec(
            vec![src("a"), src("a")],
            vec![art("out", vec![op("@a/", "@artifact/")])],
        );
        s.sources[1].namespace = Some("other".into());
        fails_at(&s, "spec.sources[1].alias", "duplicate source alias 'a' found");
    }

    #[test]
    fn row_3_duplicate_artifact_name() {
        let s = spec(
            vec![src("a")],
            vec![
                art("out", vec![op("@a/x", "@artifact/")]),
                art("out", vec![op("@a/y", "@artifact/")]),
            ],
        );
        fails_at(
            &s,
            "spec.artifacts[1].name",
            "duplicate artifact name 'out' found",
        );
    }

    #[test]
    fn row_4_invalid_name_without_path_pattern() {
        // Admission catches it first through the CEL rule; controller_side alone reports row 4.
        let s = spec(vec![src("a")], vec![art("my_app", vec![op("@a/", "@artifact/")])]);
        fails_at(&s, "spec", CEL_NAMES_MESSAGE);
        let err = controller_side(&s, "ns", &Options::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.artifacts[0].name: invalid artifact name 'my_app'"
        );
        let long = spec(
            vec![src("a")],
            vec![art(&"a".repeat(254), vec![op("@a/", "@artifact/")])],
        );
        assert!(controller_side(&long, "ns", &Options::default()).is_err());
    }

    #[test]
    fn rows_5_and_6_revision_aliases() {
        let mut s = one(vec![op("@git/", "@artifact/")]);
        s.artifacts[0].revision = Some("@unknown".into());
        fails_at(
            &s,
            "spec.artifacts[0].revision",
            "artifact out revision source alias 'unknown' not found",
        );
        s.artifacts[0].revision = Some("@git".into());
        ok(&s);
        s.artifacts[0].origin_revision = Some("@nope".into());
        fails_at(
            &s,
            "spec.artifacts[0].originRevision",
            "artifact out originRevision source alias 'nope' not found",
        );
        s.artifacts[0].origin_revision = Some("@git".into());
        ok(&s);
    }

    #[test]
    fn row_7_copy_alias() {
        let mut c = op("@b/**", "@artifact/");
        fails_at(
            &one(vec![op("@git/", "@artifact/"), c.clone()]),
            "spec.artifacts[0].copy[1].from",
            "artifact out copy[1]: source alias 'b' not found",
        );
        c.optional = true;
        field_fails(&one(vec![c]), "spec.artifacts[0].copy[0].from");
    }

    #[test]
    fn row_8_from_escapes() {
        fails_at(
            &one(vec![op("@git/a/../../x.yaml", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
            "artifact out copy[0]: source path 'a/../../x.yaml' escapes the source root",
        );
        field_fails(
            &one(vec![op("@git//etc/passwd", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        field_fails(
            &one(vec![op("@git/../*.yaml", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        ok(&one(vec![op("@git/a/../b/x.yaml", "@artifact/")]));
        ok(&one(vec![op("@git/..foo", "@artifact/")]));
        ok(&one(vec![op("@git/./", "@artifact/")]));
    }

    #[test]
    fn row_9_to_escapes() {
        let mut c = op("@git/a.tgz", "@artifact/../x/");
        c.strategy = Some(Strategy::Extract);
        fails_at(
            &one(vec![c]),
            "spec.artifacts[0].copy[0].to",
            "artifact out copy[0]: destination '../x/' escapes the artifact root",
        );
        field_fails(
            &one(vec![op("@git/a", "@artifact/a/../../x")]),
            "spec.artifacts[0].copy[0].to",
        );
        field_fails(
            &one(vec![op("@git/a", "@artifact//x")]),
            "spec.artifacts[0].copy[0].to",
        );
        field_fails(
            &one(vec![op("@git/a", "@artifact/../../outside.yaml")]),
            "spec.artifacts[0].copy[0].to",
        );
        ok(&one(vec![op("@git/x.yaml", "@artifact/a/../b/")]));
        ok(&one(vec![op("@git/x.yaml", "@artifact/")]));
        ok(&one(vec![op("@git/x.yaml", "@artifact/./")]));
    }

    #[test]
    fn row_10_malformed_patterns() {
        fails_at(
            &one(vec![op("@git/[*.yaml", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
            "artifact out copy[0]: invalid glob pattern '[*.yaml'",
        );
        field_fails(
            &one(vec![op("@git/{a,b", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        let mut c = op("@git/**", "@artifact/");
        c.exclude = vec!["ok/**".into(), "[*.md".into()];
        fails_at(
            &one(vec![c]),
            "spec.artifacts[0].copy[0].exclude[1]",
            "artifact out copy[0]: invalid exclude pattern '[*.md'",
        );
        // A trailing backslash is only malformed in a glob; a literal path may end with one.
        ok(&one(vec![op(r"@git/a\", "@artifact/")]));
        field_fails(
            &one(vec![op(r"@git/*\", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        let mut c = op("@git/x", "@artifact/");
        c.exclude = vec![r"a\".into()];
        field_fails(&one(vec![c]), "spec.artifacts[0].copy[0].exclude[0]");
        let mut c = op("@git/*.{yaml,yml}", "@artifact/");
        c.exclude = vec!["/abs".into(), "tests/".into(), "]".into(), "}".into()];
        ok(&one(vec![c]));
    }

    #[test]
    fn row_11_extract_needs_a_tarball() {
        let extract = |from: &str| CopyOperation {
            strategy: Some(Strategy::Extract),
            ..op(from, "@artifact/")
        };
        fails_at(
            &one(vec![extract("@git/charts/app.zip")]),
            "spec.artifacts[0].copy[0].from",
            "artifact out copy[0]: extract strategy requires tarball file (.tar.gz or .tgz), \
             got 'charts/app.zip'",
        );
        field_fails(&one(vec![extract("@git/")]), "spec.artifacts[0].copy[0].from");
        field_fails(
            &one(vec![extract("@git/a.tgz/..")]),
            "spec.artifacts[0].copy[0].from",
        );
        for ok_from in [
            "@git/a.tgz",
            "@git/A.TAR.GZ",
            "@git/x/../b.Tgz",
            "@git/*",
            "@git/**/*.tgz",
        ] {
            ok(&one(vec![extract(ok_from)]));
        }
        ok(&one(vec![op("@git/charts/app.zip", "@artifact/")]));
    }

    #[test]
    fn rows_run_per_artifact_then_per_copy_operation() {
        // Artifact 0 fails row 7 on copy[1] before artifact 1's row 3.
        let s = spec(
            vec![src("a")],
            vec![
                art("x", vec![op("@a/", "@artifact/../"), op("@b/", "@artifact/")]),
                art("x", vec![op("@a/", "@artifact/")]),
            ],
        );
        fails_at(
            &s,
            "spec.artifacts[0].copy[0].to",
            "artifact x copy[0]: destination '../' escapes the artifact root",
        );
        // Within one operation: row 7 before 8 before 9 before 10 before 11.
        let c = CopyOperation {
            strategy: Some(Strategy::Extract),
            ..op("@b/../[x", "@artifact/../")
        };
        fails_at(
            &one(vec![c]),
            "spec.artifacts[0].copy[0].from",
            "artifact out copy[0]: source alias 'b' not found",
        );
        let c = CopyOperation {
            strategy: Some(Strategy::Extract),
            ..op("@git/../[x", "@artifact/../")
        };
        field_fails(&one(vec![c.clone()]), "spec.artifacts[0].copy[0].from");
        let c = CopyOperation {
            from: "@git/[x".into(),
            ..c
        };
        fails_at(
            &one(vec![c.clone()]),
            "spec.artifacts[0].copy[0].to",
            "artifact out copy[0]: destination '../' escapes the artifact root",
        );
        let c = CopyOperation {
            to: "@artifact/".into(),
            exclude: vec!["[".into()],
            ..c
        };
        fails_at(
            &one(vec![c.clone()]),
            "spec.artifacts[0].copy[0].from",
            "artifact out copy[0]: invalid glob pattern '[x'",
        );
        let c = CopyOperation {
            from: "@git/x.zip".into(),
            ..c
        };
        field_fails(&one(vec![c.clone()]), "spec.artifacts[0].copy[0].exclude[0]");
        // Revision (row 5) before copy rows.
        let mut s = one(vec![op("@b/", "@artifact/")]);
        s.artifacts[0].revision = Some("@c".into());
        field_fails(&s, "spec.artifacts[0].revision");
    }

    #[test]
    fn transforms_rules() {
        let with = |ts: Vec<Transform>| {
            let mut s = spec(
                vec![src("git"), src("app")],
                vec![art("out", vec![op("@git/", "@artifact/")])],
            );
            s.artifacts[0].transforms = ts;
            s
        };
        ok(&with(vec![transform("a"), transform("b")]));
        fails_at(
            &with(vec![transform("a"), transform("a")]),
            "spec.artifacts[0].transforms[1].name",
            "artifact out transforms[1]: duplicate transform name 'a'",
        );
        let mut t = transform("a");
        t.plugin.source.alias = "plugins".into();
        fails_at(
            &with(vec![t]),
            "spec.artifacts[0].transforms[0].plugin.source.alias",
            "artifact out transforms[0]: plugin source alias 'plugins' not found",
        );
        for bad in [
            "",
            "/p.wasm",
            "../p.wasm",
            "a/../../p.wasm",
            "a/..",
            &"a".repeat(1025),
        ] {
            let mut t = transform("a");
            t.plugin.source.path = bad.into();
            field_fails(
                &with(vec![t]),
                "spec.artifacts[0].transforms[0].plugin.source.path",
            );
        }
        let mut t = transform("a");
        t.plugin.source.path = "dir/..p.wasm".into();
        ok(&with(vec![t]));
        let mut t = transform("a");
        t.read_sources = vec!["app".into(), "git".into()];
        ok(&with(vec![t.clone()]));
        t.read_sources = vec!["app".into(), "nope".into()];
        fails_at(
            &with(vec![t.clone()]),
            "spec.artifacts[0].transforms[0].readSources[1]",
            "artifact out transforms[0]: readSources alias 'nope' not found",
        );
        t.read_sources = vec!["app".into(), "app".into()];
        fails_at(
            &with(vec![t]),
            "spec.artifacts[0].transforms[0].readSources[1]",
            "artifact out transforms[0]: duplicate readSources alias 'app'",
        );
    }

    fn templated(name: &str, copy: Vec<CopyOperation>) -> ArtifactGeneratorSpec {
        let mut s = spec(vec![src("git")], vec![art(name, copy)]);
        s.path_pattern = Some("@git/apps/{app}".into());
        s
    }

    #[test]
    fn templates_are_checked_with_a_sample_segment() {
        ok(&templated(
            "{app}",
            vec![op("@git/apps/{app}/**", "@artifact/{app}/")],
        ));
        ok(&templated(
            "{app}",
            vec![op("@git/apps/{app}/*.{yaml,yml}", "@artifact/{app}/")],
        ));
        // `{app}.tgz` is literal once rendered, so Extract accepts it; `{app}` alone is no tarball.
        let extract = |from: &str| CopyOperation {
            strategy: Some(Strategy::Extract),
            ..op(from, "@artifact/")
        };
        ok(&templated("{app}", vec![extract("@git/apps/{app}.tgz")]));
        field_fails(
            &templated("{app}", vec![extract("@git/apps/{app}")]),
            "spec.artifacts[0].copy[0].from",
        );
        field_fails(
            &templated("{app}", vec![op("@git/{app}/../..", "@artifact/")]),
            "spec.artifacts[0].copy[0].from",
        );
        fails_at(
            &templated("{app}", vec![op("@git/{app}", "@artifact/{app}/../../")]),
            "spec.artifacts[0].copy[0].to",
            "artifact {app} copy[0]: destination '{app}/../../' escapes the artifact root",
        );
        // Row 4 does not apply to templates; row 3 compares raw templates.
        let mut s = templated("{app}", vec![op("@git/apps/{app}", "@artifact/")]);
        s.artifacts
            .push(art("{app}", vec![op("@git/apps/{app}", "@artifact/")]));
        fails_at(
            &s,
            "spec.artifacts[1].name",
            "duplicate artifact name '{app}' found",
        );
    }

    #[test]
    fn path_pattern_checks() {
        let pp_err = |s: &ArtifactGeneratorSpec| match validate(s, "ns", &Options::default()) {
            Err(Error::PathPattern { message }) => message,
            other => panic!("{other:?}"),
        };
        let mut s = templated("{app}-{env}", vec![op("@git/apps/{app}/", "@artifact/")]);
        assert!(pp_err(&s).contains(r#"capture variable "env" is not defined by pathPattern"#));
        s.artifacts[0].name = "{app}".into();
        s.path_pattern = Some("@other/apps/{app}".into());
        assert_eq!(
            pp_err(&s),
            r#"pathPattern "@other/apps/{app}": source alias other not found in local sources"#
        );
        s.path_pattern = Some("@git/apps/{_app}".into());
        assert!(pp_err(&s).contains("is not a valid Kubernetes label key"));
        s.path_pattern = Some("@git/apps/{app".into());
        assert!(pp_err(&s).contains("missing closing brace"));
        s.path_pattern = Some("@git/apps/{app}/{env}".into());
        s.artifacts[0].copy[0].from = "@git/apps/{app}/{nope}/*.{yaml,yml}".into();
        assert!(pp_err(&s).contains(r#""nope" is not defined"#));
        s.artifacts[0].copy[0].from = "@git/apps/{app}/{env}/*.{yaml,yml}".into();
        ok(&s);
        s.artifacts[0].copy[0].to = "@artifact/{app".into();
        assert!(pp_err(&s).contains("missing closing brace"));
        // Found through `path_pattern` with its parse result.
        s.artifacts[0].copy[0].to = "@artifact/{env}/".into();
        let pp = path_pattern(&s).unwrap().unwrap();
        assert_eq!(pp.alias, "git");
        assert_eq!(pp.captures(), ["app", "env"]);
        s.path_pattern = None;
        s.artifacts[0].name = "x".into();
        assert!(path_pattern(&s).unwrap().is_none());
    }

    /// Replaces `{repeat: s, times: n}` by the repeated string (cases/README.md).
    fn expand_repeats(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let (Some(serde_json::Value::String(s)), Some(n), 2) = (
                    map.get("repeat"),
                    map.get("times").and_then(|t| t.as_u64()),
                    map.len(),
                ) {
                    *v = serde_json::Value::String(s.repeat(n as usize));
                } else {
                    map.values_mut().for_each(expand_repeats);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(expand_repeats),
            _ => {}
        }
    }

    /// What each invalid case must fail on (a fragment of `field: message`), so a case cannot pass by
    /// failing for an unrelated reason. Cases not listed only need to be rejected.
    const EXPECTED: &[(&str, &str)] = &[
        ("alias-uppercase-rejected", "spec.sources[0].alias: must match"),
        ("alias-64-chars-rejected", "spec.sources[0].alias: must match"),
        (
            "static-artifact-name-with-space-rejected-by-cel",
            CEL_NAMES_MESSAGE,
        ),
        (
            "from-without-at-rejected",
            "spec.artifacts[0].copy[0].from: must match",
        ),
        (
            "to-escaping-artifact-root-is-invalid",
            "destination '../x/' escapes the artifact root",
        ),
        ("unsupported-kind-rejected", "spec.sources[0].kind"),
        (
            "revision-without-at-rejected",
            "spec.artifacts[0].revision: must match",
        ),
        ("unknown-strategy-rejected", "spec.artifacts[0].copy[0].strategy"),
        (
            "empty-copy-rejected",
            "spec.artifacts[0].copy: must have at least 1",
        ),
        (
            "too-many-excludes-rejected",
            "spec.artifacts[0].copy[0].exclude: must have at most 100",
        ),
        ("duplicate-alias-is-invalid", "duplicate source alias 'a' found"),
        (
            "duplicate-artifact-name-is-invalid",
            "duplicate artifact name 'out' found",
        ),
        (
            "unknown-revision-alias-is-invalid",
            "revision source alias 'unknown' not found",
        ),
        (
            "unknown-origin-revision-alias-is-invalid",
            "originRevision source alias 'nope' not found",
        ),
        (
            "unknown-copy-alias-is-invalid",
            "copy[0]: source alias 'b' not found",
        ),
        (
            "optional-string-is-rejected",
            "spec.artifacts[0].copy[0].optional",
        ),
        ("unknown-field-is-rejected", "stratgy"),
        ("from-escaping-alias-root-is-invalid", "escapes the source root"),
        ("malformed-exclude-is-invalid", "invalid exclude pattern '[*.md'"),
        (
            "extract-literal-non-tarball-is-invalid",
            "extract strategy requires tarball file",
        ),
        (
            "pathpattern-undefined-placeholder-is-invalid",
            r#"capture variable "env" is not defined by pathPattern"#,
        ),
        (
            "pathpattern-unknown-alias-is-invalid",
            "source alias other not found in local sources",
        ),
    ];

    #[test]
    fn conformance_validation_cases() {
        let text = include_str!("../tests/cases/validation.yaml");
        let file: serde_json::Value = yaml_serde::from_str(text).unwrap();
        let cases = file["cases"].as_array().unwrap();
        assert!(cases.len() >= 30, "{}", cases.len());
        let mut seen = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let mut object = case["object"].clone();
            expand_repeats(&mut object);
            let manifest = serde_json::json!({
                "apiVersion": crate::spec::API_VERSION,
                "kind": crate::spec::KIND,
                "metadata": {"name": "x", "namespace": "conformance"},
                "spec": object,
            });
            // JSON is YAML: parse exactly as `artgen validate` parses a file.
            let result = crate::spec::parse_manifest(&manifest.to_string()).and_then(|m| {
                validate(
                    &m.spec,
                    m.metadata.namespace.as_deref().unwrap_or("default"),
                    &Options::default(),
                )
                .map_err(|e| e.to_string())
            });
            let valid = case["expect"]["valid"].as_bool().unwrap();
            match (&result, valid) {
                (Ok(()), true) => {}
                (Err(e), false) => {
                    if let Some((_, want)) = EXPECTED.iter().find(|(n, _)| *n == name) {
                        assert!(e.contains(want), "{name}: error {e:?} should contain {want:?}");
                        seen.push(name);
                    }
                }
                (Ok(()), false) => panic!("{name}: accepted, expected invalid"),
                (Err(e), true) => panic!("{name}: rejected ({e}), expected valid"),
            }
        }
        assert_eq!(
            seen.len(),
            EXPECTED.len(),
            "every EXPECTED entry names an invalid case"
        );
    }
}
