//! `image-tag-setter`: kustomize `images:` semantics over the YAML files of `/work` (design §11).
//!
//! Config: `{"images": [{"name": "nginx", "newName": "registry/nginx", "newTag": "1.27.2", "digest": "sha256:…"}]}`.
//!
//! * Every `*.yaml`/`*.yml` file (multi-document) is parsed; in `Pod`, `Deployment`, `StatefulSet`, `DaemonSet`,
//!   `ReplicaSet`, `Job` and `CronJob` documents (and in the `items` of a `List`), the `image` of every entry of
//!   `containers` and `initContainers` is matched against the rules.
//! * An image reference is `name[:tag][@digest]`; a rule matches when its `name` equals the reference's name (the
//!   registry host and port are part of the name). Rules apply in order, like kustomize's transformer.
//! * Rewrite: `newName` replaces the name. `newTag` and `digest` together set both; `newTag` alone sets the tag
//!   and drops any digest; `digest` alone sets the digest and drops any tag.
//! * Only files with a changed image are re-serialized; comments, quoting, key styles and empty documents in those
//!   files are not preserved (key order is). Other files are untouched, byte for byte.
//! * A rule that matched no image anywhere ⇒ a warning `images.unmatched`. A YAML file that does not parse ⇒
//!   `rejected` (`yaml.parse`, with the line).

use std::path::Path;

use artgen_plugin_sdk::fs::walk_sorted_with_suffix;
use artgen_plugin_sdk::{
    Context, Diagnostic, Failure, Guest, PluginConfig, PluginInfo, Success, WORK, display_path,
};
use regex::Regex;
use serde::Deserialize;
use yaml_serde::Value;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "images": {
      "type": "array",
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["name"],
        "properties": {
          "name": {"type": "string", "minLength": 1, "description": "image name to match, without tag or digest"},
          "newName": {"type": "string", "minLength": 1},
          "newTag": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
          "digest": {"type": "string", "pattern": "^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]+$"}
        }
      }
    }
  }
}"#;

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageRule {
    pub name: String,
    #[serde(default)]
    pub new_name: Option<String>,
    #[serde(default)]
    pub new_tag: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub images: Vec<ImageRule>,
}

impl PluginConfig for Config {
    fn check(&self) -> Vec<Diagnostic> {
        let tag_re = Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid regex");
        let digest_re = Regex::new(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]+$").expect("valid regex");
        let mut diags = Vec::new();
        let mut err = |i: usize, msg: String| {
            diags.push(Diagnostic::error("config.invalid", format!("images[{i}]: {msg}")))
        };
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.images.iter().enumerate() {
            let parsed = ImageRef::parse(&r.name);
            if r.name.is_empty() || r.name.chars().any(char::is_whitespace) {
                err(i, format!("name {:?} is not an image name", r.name));
            } else if parsed.tag.is_some() || parsed.digest.is_some() {
                err(
                    i,
                    format!(
                        "name {:?} must not include a tag or digest (use newTag/digest)",
                        r.name
                    ),
                );
            } else if !seen.insert(r.name.as_str()) {
                err(i, format!("duplicate name {:?}", r.name));
            }
            if let Some(n) = &r.new_name
                && (n.is_empty() || n.contains('@') || n.chars().any(char::is_whitespace))
            {
                err(i, format!("newName {n:?} is not an image name"));
            }
            if let Some(t) = &r.new_tag
                && !tag_re.is_match(t)
            {
                err(i, format!("newTag {t:?} is not a valid tag"));
            }
            if let Some(d) = &r.digest
                && !digest_re.is_match(d)
            {
                err(i, format!("digest {d:?} is not a digest like sha256:<hex>"));
            }
        }
        diags
    }
}

/// An image reference `name[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef<'a> {
    pub name: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    pub fn parse(s: &'a str) -> ImageRef<'a> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (s, None),
        };
        let slash = rest.rfind('/');
        match rest.rfind(':') {
            // A colon before the last slash is a registry port, not a tag.
            Some(c) if slash.is_none_or(|sl| c > sl) => ImageRef {
                name: &rest[..c],
                tag: Some(&rest[c + 1..]),
                digest,
            },
            _ => ImageRef {
                name: rest,
                tag: None,
                digest,
            },
        }
    }
}

/// Applies `rule` to `image` if the names match: `Some(new reference)` (possibly equal to the old one).
pub fn apply(rule: &ImageRule, image: &str) -> Option<String> {
    let r = ImageRef::parse(image);
    if r.name != rule.name {
        return None;
    }
    let name = rule.new_name.as_deref().unwrap_or(r.name);
    let (tag, digest) = match (rule.new_tag.as_deref(), rule.digest.as_deref()) {
        (Some(t), Some(d)) => (Some(t), Some(d)),
        (Some(t), None) => (Some(t), None),
        (None, Some(d)) => (None, Some(d)),
        (None, None) => (r.tag, r.digest),
    };
    let mut out = name.to_owned();
    if let Some(t) = tag {
        out.push(':');
        out.push_str(t);
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

const TEMPLATE_KINDS: [&str; 5] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"];

/// Rewrites the images of one document; `matched[i]` is set for each rule that matched. Returns the number of
/// changed image fields.
pub fn rewrite_document(doc: &mut Value, rules: &[ImageRule], matched: &mut [bool]) -> usize {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let pod_spec = match kind.as_str() {
        "List" => {
            let Some(items) = doc.get_mut("items").and_then(Value::as_sequence_mut) else {
                return 0;
            };
            return items
                .iter_mut()
                .map(|item| rewrite_document(item, rules, matched))
                .sum();
        }
        "Pod" => doc.get_mut("spec"),
        k if TEMPLATE_KINDS.contains(&k) => doc
            .get_mut("spec")
            .and_then(|s| s.get_mut("template"))
            .and_then(|t| t.get_mut("spec")),
        "CronJob" => doc
            .get_mut("spec")
            .and_then(|s| s.get_mut("jobTemplate"))
            .and_then(|j| j.get_mut("spec"))
            .and_then(|s| s.get_mut("template"))
            .and_then(|t| t.get_mut("spec")),
        _ => None,
    };
    let Some(pod_spec) = pod_spec else { return 0 };
    let mut changed = 0;
    for field in ["initContainers", "containers"] {
        let Some(containers) = pod_spec.get_mut(field).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for c in containers {
            let Some(image) = c.get_mut("image") else { continue };
            let Some(old) = image.as_str().map(str::to_owned) else {
                continue;
            };
            let mut current = old.clone();
            for (i, rule) in rules.iter().enumerate() {
                if let Some(new) = apply(rule, &current) {
                    matched[i] = true;
                    current = new;
                }
            }
            if current != old {
                *image = Value::String(current);
                changed += 1;
            }
        }
    }
    changed
}

/// Result of processing one file's text: `Some(new text)` when an image changed.
pub fn rewrite_file(
    text: &str,
    rules: &[ImageRule],
    matched: &mut [bool],
) -> Result<(Option<String>, usize), yaml_serde::Error> {
    let mut docs = Vec::new();
    for de in yaml_serde::Deserializer::from_str(text) {
        docs.push(Value::deserialize(de)?);
    }
    let changed: usize = docs.iter_mut().map(|d| rewrite_document(d, rules, matched)).sum();
    if changed == 0 {
        return Ok((None, 0));
    }
    let mut out = String::new();
    for doc in docs.iter().filter(|d| !d.is_null()) {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&yaml_serde::to_string(doc)?);
    }
    Ok((Some(out), changed))
}

/// The whole transform over `work`.
pub fn run(work: &Path, cfg: &Config) -> Result<Vec<Diagnostic>, Failure> {
    let files = walk_sorted_with_suffix(work, &[".yaml", ".yml"])
        .map_err(|e| Failure::internal(format!("walking /work: {e}")))?;
    let mut matched = vec![false; cfg.images.len()];
    let mut diags = Vec::new();
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    for rel in &files {
        let shown = display_path(rel);
        let bytes =
            std::fs::read(work.join(rel)).map_err(|e| Failure::internal(format!("reading {shown}: {e}")))?;
        let Ok(text) = String::from_utf8(bytes) else {
            errors.push(Diagnostic::error("yaml.parse", "file is not UTF-8").at(shown, None));
            continue;
        };
        match rewrite_file(&text, &cfg.images, &mut matched) {
            Ok((Some(new), n)) => {
                diags.push(
                    Diagnostic::info("images.updated", format!("updated {n} image reference(s)"))
                        .at(shown.clone(), None),
                );
                writes.push((rel.clone(), new));
            }
            Ok((None, _)) => {}
            Err(e) => {
                let line = e.location().map(|l| l.line() as u32);
                errors.push(Diagnostic::error("yaml.parse", e.to_string()).at(shown, line));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Failure::Rejected(errors));
    }
    for (rel, text) in writes {
        std::fs::write(work.join(&rel), text)
            .map_err(|e| Failure::internal(format!("writing {}: {e}", display_path(&rel))))?;
    }
    for (rule, hit) in cfg.images.iter().zip(&matched) {
        if !hit {
            diags.push(Diagnostic::warning(
                "images.unmatched",
                format!("no image named {}", rule.name),
            ));
        }
    }
    Ok(diags)
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Sets container images (kustomize images: semantics) in workload manifests.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::validate_config::<Config>(&config)
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let (cfg, mut diags) = artgen_plugin_sdk::load_config::<Config>(&config)?;
        diags.extend(run(Path::new(WORK), &cfg)?);
        Ok(Success::new(diags))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, new_name: Option<&str>, tag: Option<&str>, digest: Option<&str>) -> ImageRule {
        ImageRule {
            name: name.into(),
            new_name: new_name.map(Into::into),
            new_tag: tag.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn parse_refs() {
        let p = ImageRef::parse;
        assert_eq!(
            p("nginx"),
            ImageRef {
                name: "nginx",
                tag: None,
                digest: None
            }
        );
        assert_eq!(
            p("nginx:1.2"),
            ImageRef {
                name: "nginx",
                tag: Some("1.2"),
                digest: None
            }
        );
        assert_eq!(
            p("localhost:5000/a/b"),
            ImageRef {
                name: "localhost:5000/a/b",
                tag: None,
                digest: None
            }
        );
        assert_eq!(
            p("localhost:5000/a/b:v1@sha256:ab"),
            ImageRef {
                name: "localhost:5000/a/b",
                tag: Some("v1"),
                digest: Some("sha256:ab")
            }
        );
        assert_eq!(
            p("nginx@sha256:ab"),
            ImageRef {
                name: "nginx",
                tag: None,
                digest: Some("sha256:ab")
            }
        );
    }

    #[test]
    fn kustomize_semantics() {
        let d = "sha256:24a0c4b4a4c0eb97a1aabb8e29f18e917d05abfe1b7a7c07857230879ce7d3d3";
        assert_eq!(
            apply(&rule("nginx", None, Some("1.27"), None), "nginx:1.0@sha256:aa").unwrap(),
            "nginx:1.27"
        );
        assert_eq!(
            apply(&rule("nginx", None, None, Some(d)), "nginx:1.0").unwrap(),
            format!("nginx@{d}")
        );
        assert_eq!(
            apply(&rule("nginx", None, Some("1"), Some(d)), "nginx").unwrap(),
            format!("nginx:1@{d}")
        );
        assert_eq!(
            apply(&rule("nginx", Some("reg.io/nginx"), None, None), "nginx:1.0").unwrap(),
            "reg.io/nginx:1.0"
        );
        assert_eq!(
            apply(&rule("nginx", None, Some("1"), None), "docker.io/nginx:1.0"),
            None
        );
        assert_eq!(
            apply(&rule("nginx", None, Some("1"), None), "nginx-extra:1.0"),
            None
        );
    }

    const DEPLOY: &str = "\
# a comment that is dropped when the file changes
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: busybox:1.36
      containers:
      - name: app
        image: nginx:1.25
      - name: side
        image: envoy
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: job
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: c
            image: nginx
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
data:
  image: nginx:1.0
";

    #[test]
    fn rewrites_workloads_only() {
        let rules = vec![
            rule("nginx", None, Some("1.27.2"), None),
            rule("busybox", Some("reg/busybox"), None, None),
            rule("redis", None, Some("7"), None),
        ];
        let mut matched = vec![false; 3];
        let (out, n) = rewrite_file(DEPLOY, &rules, &mut matched).unwrap();
        let out = out.unwrap();
        assert_eq!(n, 3);
        assert_eq!(matched, [true, true, false]);
        assert!(out.contains("image: nginx:1.27.2\n"), "{out}");
        assert!(out.contains("image: reg/busybox:1.36\n"), "{out}");
        assert!(out.contains("image: envoy\n"));
        assert!(
            out.contains("image: nginx:1.0\n"),
            "ConfigMap data untouched: {out}"
        );
        assert_eq!(out.matches("---\n").count(), 2);
        assert!(!out.contains("comment"));
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(
            docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
            Some("nginx:1.27.2")
        );
        // key order kept
        assert!(
            out.starts_with("apiVersion: apps/v1\nkind: Deployment\n"),
            "{out}"
        );
    }

    #[test]
    fn run_over_tree() {
        let d = std::env::temp_dir().join(format!("artgen-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("deploy")).unwrap();
        std::fs::write(d.join("deploy/app.yaml"), DEPLOY).unwrap();
        let pod = "kind: Pod\nspec: {containers: [{name: a, image: 'redis:6'}]}\n";
        std::fs::write(d.join("pod.yml"), pod).unwrap();
        let cfg: Config = artgen_plugin_sdk::parse_config(
            r#"{"images":[{"name":"nginx","newTag":"1.27.2"},{"name":"postgres","newTag":"16"}]}"#,
        )
        .unwrap();
        let diags = run(&d, &cfg).unwrap();
        let summary: Vec<_> = diags
            .iter()
            .map(|x| (x.code.as_str(), x.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("images.updated", "updated 2 image reference(s)"),
                ("images.unmatched", "no image named postgres")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.join("pod.yml")).unwrap(),
            pod,
            "unchanged file keeps its bytes"
        );
        std::fs::write(d.join("broken.yaml"), "a: [\n").unwrap();
        let Err(Failure::Rejected(errs)) = run(&d, &cfg) else {
            panic!()
        };
        assert_eq!(
            (
                errs[0].code.as_str(),
                errs[0].location.as_ref().unwrap().path.as_str()
            ),
            ("yaml.parse", "broken.yaml")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn config_checks() {
        let v = artgen_plugin_sdk::validate_config::<Config>;
        assert!(v(r#"{"images":[{"name":"nginx","newTag":"1.2","digest":"sha256:abcd"}]}"#).is_empty());
        assert!(!v(r#"{"images":[{"name":"nginx:1"}]}"#).is_empty());
        assert!(!v(r#"{"images":[{"name":"nginx","newTag":"bad tag"}]}"#).is_empty());
        assert!(!v(r#"{"images":[{"name":"nginx","digest":"abc"}]}"#).is_empty());
        assert!(!v(r#"{"images":[{"name":"a"},{"name":"a"}]}"#).is_empty());
        assert!(!v(r#"{"images":[{"newTag":"1"}]}"#).is_empty());
        assert!(v(r#"{"images":[{"name":"localhost:5000/app"}]}"#).is_empty());
    }
}
