//! `values-templater`: renders every `*.j2` file under `/work` with minijinja (design §11).
//!
//! * Values: `config.values`, deep-merged over `/sources/<valuesFrom>/values.yaml` when `config.valuesFrom` names
//!   a source granted through `readSources` (objects merge key by key; anything else is replaced).
//! * The template context is the merged values object; the global `artgen` holds `namespace`, `generator`,
//!   `artifact`, `transform` and `labels` (a map of the pathPattern captures).
//! * `x.yaml.j2` is rendered to `x.yaml` (an existing `x.yaml` is overwritten) and the template is removed.
//!   Templates whose file name starts with `_` are partials: usable with `{% include %}`/`{% import %}` by their
//!   path relative to `/work`, removed, never rendered on their own.
//! * Strict undefined: using an undefined variable is an error. Any template error ⇒ `rejected` with one
//!   diagnostic per failing template (path, line, column) and nothing written. No auto-escaping; a single
//!   trailing newline is kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artgen_plugin_sdk::fs::walk_sorted_with_suffix;
use artgen_plugin_sdk::{
    Context, Diagnostic, Failure, Guest, PluginConfig, PluginInfo, Success, WORK, display_path, line_col,
};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value};

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "values": {"type": "object", "description": "template values; merged over the source's values.yaml"},
    "valuesFrom": {"type": "string", "minLength": 1, "maxLength": 253,
                   "description": "alias of a readSources entry whose values.yaml provides defaults"}
  }
}"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub values: Map<String, Value>,
    #[serde(default)]
    pub values_from: Option<String>,
}

impl PluginConfig for Config {
    fn check(&self) -> Vec<Diagnostic> {
        match &self.values_from {
            Some(a) if a.is_empty() || a.contains('/') || a == "." || a == ".." => {
                vec![Diagnostic::error(
                    "config.invalid",
                    format!("valuesFrom: {a:?} is not a source alias"),
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// Where a template renders to, or `None` for a partial.
pub fn output_path(template: &Path) -> Option<PathBuf> {
    let name = template.file_name()?.to_str()?;
    if name.starts_with('_') {
        return None;
    }
    Some(template.with_file_name(name.strip_suffix(".j2")?))
}

/// Deep merge: objects key by key, anything else replaced by `over`.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Reads `values.yaml` (a mapping; missing file = empty).
pub fn load_values_file(path: &Path, shown_as: &str) -> Result<(Value, Vec<Diagnostic>), Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let d = Diagnostic::info(
                "values.file-missing",
                format!("{shown_as} does not exist; using config values only"),
            );
            return Ok((Value::Object(Map::new()), vec![d]));
        }
        Err(e) => return Err(Failure::internal(format!("reading {shown_as}: {e}"))),
    };
    if text.trim().is_empty() {
        return Ok((Value::Object(Map::new()), Vec::new()));
    }
    let reject = |msg: String, line: Option<u32>| {
        Failure::Rejected(vec![Diagnostic::error("values.invalid", msg).at(shown_as, line)])
    };
    match yaml_serde::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok((v, Vec::new())),
        Ok(Value::Null) => Ok((Value::Object(Map::new()), Vec::new())),
        Ok(_) => Err(reject(
            format!("{shown_as}: the top level must be a mapping"),
            Some(1),
        )),
        Err(e) => {
            let line = e.location().map(|l| l.line() as u32);
            Err(reject(format!("{shown_as}: {e}"), line))
        }
    }
}

/// The `artgen` global.
pub fn context_value(ctx: &Context) -> Value {
    let labels: Map<String, Value> = ctx
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "namespace": ctx.namespace,
        "generator": ctx.generator,
        "artifact": ctx.artifact,
        "transform": ctx.transform,
        "labels": labels,
    })
}

/// Renders every template under `work`. On success the tree has been rewritten; on error nothing was written.
pub fn render_tree(work: &Path, values: &Value, artgen: &Value) -> Result<Vec<Diagnostic>, Failure> {
    let templates = walk_sorted_with_suffix(work, &[".j2"])
        .map_err(|e| Failure::internal(format!("walking /work: {e}")))?;
    let mut sources = BTreeMap::new();
    for rel in &templates {
        let text = std::fs::read_to_string(work.join(rel)).map_err(|e| {
            Failure::Rejected(vec![
                Diagnostic::error("template.read", format!("cannot read template: {e}"))
                    .at(display_path(rel), None),
            ])
        })?;
        sources.insert(display_path(rel), text);
    }

    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.add_global("artgen", minijinja::Value::from(Serde(artgen)));

    let mut errors = Vec::new();
    for (name, text) in &sources {
        if let Err(e) = env.add_template_owned(name.clone(), text.clone()) {
            errors.push(template_error(&e, name, &sources));
        }
    }
    let mut outputs = Vec::new();
    if errors.is_empty() {
        let ctx = minijinja::Value::from(Serde(values));
        for rel in &templates {
            let Some(out) = output_path(rel) else { continue };
            let name = display_path(rel);
            match env.get_template(&name).and_then(|t| t.render(&ctx)) {
                Ok(text) => outputs.push((out, text)),
                Err(e) => errors.push(template_error(&e, &name, &sources)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(Failure::Rejected(errors));
    }

    let mut diags = Vec::new();
    for (out, text) in &outputs {
        let dest = work.join(out);
        if dest.exists() {
            diags.push(
                Diagnostic::warning(
                    "template.overwrite",
                    "rendered template replaced an existing file",
                )
                .at(display_path(out), None),
            );
        }
        std::fs::write(&dest, text)
            .map_err(|e| Failure::internal(format!("writing {}: {e}", display_path(out))))?;
    }
    for rel in &templates {
        std::fs::remove_file(work.join(rel))
            .map_err(|e| Failure::internal(format!("removing {}: {e}", display_path(rel))))?;
    }
    diags.push(Diagnostic::info(
        "template.rendered",
        format!(
            "rendered {} template(s), removed {} template file(s)",
            outputs.len(),
            templates.len()
        ),
    ));
    Ok(diags)
}

fn template_error(e: &minijinja::Error, current: &str, sources: &BTreeMap<String, String>) -> Diagnostic {
    let code = match e.kind() {
        ErrorKind::UndefinedError => "template.undefined",
        ErrorKind::SyntaxError => "template.syntax",
        ErrorKind::TemplateNotFound => "template.not-found",
        _ => "template.render",
    };
    let path = e.name().unwrap_or(current).to_owned();
    let line = e.line().map(|l| l as u32);
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    let mut d = Diagnostic::error(code, message).at(path.clone(), line);
    if let (Some(range), Some(src)) = (e.range(), sources.get(&path)) {
        // Name the offending expression (e.g. `image.tag`) when it is short.
        if let Some(snippet) = src
            .get(range.clone())
            .filter(|_| e.detail().is_none())
            .filter(|s| s.len() <= 80 && !s.contains('\n') && !s.is_empty())
        {
            d.message = format!("{}: `{snippet}`", d.message);
        }
        d = d.with_column(line_col(src.as_bytes(), range.start).1);
    }
    if code == "template.undefined" {
        d = d.with_hint(
            "define the value in config.values (or the valuesFrom source), or use `| default(...)`",
        );
    }
    d
}

/// The whole transform with explicit paths (host tests call this).
pub fn run(
    work: &Path,
    config: &Config,
    values_file: Option<(&Path, &str)>,
    ctx: &Context,
) -> Result<Vec<Diagnostic>, Failure> {
    let mut diags = Vec::new();
    let mut values = Value::Object(Map::new());
    if let Some((path, shown)) = values_file {
        let (file_values, d) = load_values_file(path, shown)?;
        values = file_values;
        diags.extend(d);
    }
    merge(&mut values, Value::Object(config.values.clone()));
    diags.extend(render_tree(work, &values, &context_value(ctx))?);
    Ok(diags)
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Renders *.j2 templates with minijinja (strict undefined) from config values and an optional source's values.yaml.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::validate_config::<Config>(&config)
    }

    fn transform(config: String, ctx: Context) -> Result<Success, Failure> {
        let (cfg, mut diags) = artgen_plugin_sdk::load_config::<Config>(&config)?;
        let mut values_file = None;
        if let Some(alias) = &cfg.values_from {
            let Some(mount) = ctx.mount(alias) else {
                return Err(Failure::Rejected(vec![
                    Diagnostic::error(
                        "values.source-not-mounted",
                        format!("source {alias:?} is not mounted"),
                    )
                    .with_hint(format!("add {alias} to the transform's readSources")),
                ]));
            };
            values_file = Some((
                Path::new(mount).join("values.yaml"),
                format!("{mount}/values.yaml"),
            ));
        }
        let vf = values_file.as_ref().map(|(p, s)| (p.as_path(), s.as_str()));
        diags.extend(run(Path::new(WORK), &cfg, vf, &ctx)?);
        Ok(Success::new(diags))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(tag: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("artgen-templater-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (p, c) in files {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cfg(json: &str) -> Config {
        artgen_plugin_sdk::parse_config(json).unwrap()
    }

    #[test]
    fn renders_and_removes_templates() {
        let d = tree(
            "ok",
            &[
                (
                    "deploy/app.yaml.j2",
                    "replicas: {{ replicas }}\nimage: {{ image.name }}:{{ image.tag }}\nenv: {{ artgen.labels.env }}\n",
                ),
                ("deploy/_part.j2", "part {{ replicas }}"),
                ("inc.txt.j2", "{% include 'deploy/_part.j2' %}!"),
                ("keep.txt", "unchanged {{ x }}"),
            ],
        );
        let values = tree(
            "okv",
            &[("values.yaml", "replicas: 1\nimage: {name: nginx, tag: '1.0'}\n")],
        );
        let mut ctx = Context::for_tests();
        ctx.labels.push(("env".into(), "prod".into()));
        let c = cfg(r#"{"values":{"replicas":3,"image":{"tag":"1.27"}},"valuesFrom":"app"}"#);
        let diags = run(
            &d,
            &c,
            Some((&values.join("values.yaml"), "/sources/app/values.yaml")),
            &ctx,
        )
        .unwrap();
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        assert_eq!(
            std::fs::read_to_string(d.join("deploy/app.yaml")).unwrap(),
            "replicas: 3\nimage: nginx:1.27\nenv: prod\n"
        );
        assert_eq!(std::fs::read_to_string(d.join("inc.txt")).unwrap(), "part 3!");
        assert_eq!(
            std::fs::read_to_string(d.join("keep.txt")).unwrap(),
            "unchanged {{ x }}"
        );
        let left: Vec<_> = artgen_plugin_sdk::walk_sorted(&d).unwrap();
        assert_eq!(
            left,
            [
                PathBuf::from("deploy/app.yaml"),
                PathBuf::from("inc.txt"),
                PathBuf::from("keep.txt")
            ]
        );
    }

    #[test]
    fn strict_undefined_is_rejected_with_position() {
        let d = tree(
            "undef",
            &[
                ("a.yaml.j2", "ok: 1\nname: {{ missing }}\n"),
                ("b.txt.j2", "{{ fine }}"),
            ],
        );
        let err = run(&d, &cfg(r#"{"values":{"fine":1}}"#), None, &Context::for_tests()).unwrap_err();
        let Failure::Rejected(diags) = err else {
            panic!("{err:?}")
        };
        assert_eq!(diags.len(), 1, "{diags:?}");
        let loc = diags[0].location.clone().unwrap();
        assert_eq!(diags[0].code, "template.undefined");
        // minijinja gives a detail in some builds ("`missing` is undefined"); else the expression is quoted.
        assert!(
            diags[0].message.starts_with("undefined value: `missing`"),
            "{}",
            diags[0].message
        );
        assert_eq!(
            (loc.path.as_str(), loc.line, loc.column),
            ("a.yaml.j2", Some(2), Some(10))
        );
        // nothing written, nothing removed
        assert!(d.join("a.yaml.j2").exists() && !d.join("b.txt").exists());
    }

    #[test]
    fn attribute_of_undefined_and_syntax_errors() {
        let d = tree(
            "syn",
            &[("a.j2", "{{ values.x.y }}"), ("b.j2", "line1\n{% if %}")],
        );
        let Failure::Rejected(diags) = run(&d, &Config::default(), None, &Context::for_tests()).unwrap_err()
        else {
            panic!()
        };
        let codes: Vec<_> = diags
            .iter()
            .map(|d| (d.code.as_str(), d.location.as_ref().unwrap().path.as_str()))
            .collect();
        assert_eq!(codes, [("template.syntax", "b.j2")]);
        let d = tree("undef2", &[("a.j2", "{{ values.x.y }}")]);
        let Failure::Rejected(diags) = run(&d, &Config::default(), None, &Context::for_tests()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(diags[0].code, "template.undefined");
    }

    #[test]
    fn merge_and_values_file() {
        let mut base = serde_json::json!({"a": {"b": 1, "c": 2}, "l": [1]});
        merge(&mut base, serde_json::json!({"a": {"c": 3}, "l": [2]}));
        assert_eq!(base, serde_json::json!({"a": {"b": 1, "c": 3}, "l": [2]}));
        let d = tree("vf", &[("values.yaml", "- 1\n"), ("bad.yaml", "a: [\n")]);
        assert!(matches!(
            load_values_file(&d.join("values.yaml"), "v"),
            Err(Failure::Rejected(_))
        ));
        assert!(matches!(
            load_values_file(&d.join("bad.yaml"), "v"),
            Err(Failure::Rejected(_))
        ));
        let (v, diags) = load_values_file(&d.join("nope.yaml"), "v").unwrap();
        assert_eq!(
            (v, diags[0].code.as_str()),
            (serde_json::json!({}), "values.file-missing")
        );
    }

    #[test]
    fn output_names() {
        assert_eq!(
            output_path(Path::new("a/b.yaml.j2")),
            Some(PathBuf::from("a/b.yaml"))
        );
        assert_eq!(output_path(Path::new("a/_b.yaml.j2")), None);
        assert!(artgen_plugin_sdk::validate_config::<Config>(r#"{"valuesFrom":"../x"}"#)[0].is_error());
        assert!(
            artgen_plugin_sdk::validate_config::<Config>(r#"{"valuesFrom":"app","values":{}}"#).is_empty()
        );
        assert!(!artgen_plugin_sdk::validate_config::<Config>(r#"{"values":[]}"#).is_empty());
    }
}
