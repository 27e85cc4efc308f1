//! `yaml-to-json`: every `*.yaml`/`*.yml` file under `/work` becomes a `.json` file next to it holding its
//! canonical JSON (RFC 8785, no trailing newline); the YAML file is removed (design §11).
//!
//! * A file with exactly one document becomes that document's value; a file with zero or several documents
//!   becomes an array of them (an empty file is one null document ⇒ `null`; a trailing `---` adds a null).
//! * Scalars follow yaml_serde's YAML 1.2 rules: `yes`/`on` are strings, and so is `007` (leading zeros).
//! * Tags are dropped (the tagged value is kept). Mapping keys that are scalars are stringified (`1` ⇒ `"1"`,
//!   `true` ⇒ `"true"`, `~` ⇒ `"null"`); other keys, NaN/infinities and integers outside ±2^53 are errors.
//! * Errors (parse errors with their line, unrepresentable values, `x.json` already existing or produced twice
//!   by `x.yaml` and `x.yml`) ⇒ `rejected`, nothing written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artgen_plugin_sdk::fs::walk_sorted_with_suffix;
use artgen_plugin_sdk::json::{es_number, to_canonical_string};
use artgen_plugin_sdk::{
    Context, Diagnostic, Failure, Guest, PluginConfig, PluginInfo, Success, WORK, display_path,
};
use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};
use yaml_serde::Value as Yaml;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {}
}"#;

/// No options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl PluginConfig for Config {}

/// A YAML value as JSON; `Err` explains what has no JSON form.
pub fn yaml_to_json(v: &Yaml) -> Result<Json, String> {
    Ok(match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Json::Number(u.into())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Json::Number(Number::from_f64(f).ok_or_else(|| format!("{n} has no JSON form"))?)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?),
        Yaml::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = key_string(k)?;
                if out.insert(key.clone(), yaml_to_json(v)?).is_some() {
                    return Err(format!("duplicate key {key:?} after converting keys to strings"));
                }
            }
            Json::Object(out)
        }
        Yaml::Tagged(t) => yaml_to_json(&t.value)?,
    })
}

fn key_string(k: &Yaml) -> Result<String, String> {
    match k {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Null => Ok("null".into()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Ok(i.to_string()),
            (_, Some(u), _) => Ok(u.to_string()),
            (_, _, Some(f)) => es_number(f).map_err(|e| e.to_string()),
            _ => Err(format!("key {n} has no JSON form")),
        },
        Yaml::Tagged(t) => key_string(&t.value),
        Yaml::Sequence(_) | Yaml::Mapping(_) => {
            Err("a sequence or mapping used as a key has no JSON form".into())
        }
    }
}

/// Canonical JSON of a whole YAML file. `Err((message, line))`.
pub fn convert(text: &str) -> Result<String, (String, Option<u32>)> {
    let mut docs = Vec::new();
    for de in yaml_serde::Deserializer::from_str(text) {
        let doc =
            Yaml::deserialize(de).map_err(|e| (e.to_string(), e.location().map(|l| l.line() as u32)))?;
        docs.push(yaml_to_json(&doc).map_err(|m| (m, None))?);
    }
    let value = if docs.len() == 1 {
        docs.pop().expect("one document")
    } else {
        Json::Array(docs)
    };
    to_canonical_string(&value).map_err(|e| (e.to_string(), None))
}

/// `x.yaml`/`x.yml` ⇒ `x.json`.
pub fn json_path(yaml: &Path) -> PathBuf {
    yaml.with_extension("json")
}

pub fn run(work: &Path) -> Result<Vec<Diagnostic>, Failure> {
    let files = walk_sorted_with_suffix(work, &[".yaml", ".yml"])
        .map_err(|e| Failure::internal(format!("walking /work: {e}")))?;
    let mut errors = Vec::new();
    let mut outputs: BTreeMap<PathBuf, (PathBuf, String)> = BTreeMap::new();
    for rel in &files {
        let shown = display_path(rel);
        let out = json_path(rel);
        if let Some((first, _)) = outputs.get(&out) {
            let msg = format!(
                "both {} and {shown} would become {}",
                display_path(first),
                display_path(&out)
            );
            errors.push(Diagnostic::error("yaml-to-json.conflict", msg).at(shown, None));
            continue;
        }
        if work.join(&out).exists() {
            let msg = format!("{} already exists", display_path(&out));
            errors.push(Diagnostic::error("yaml-to-json.conflict", msg).at(shown, None));
            continue;
        }
        let text = match std::fs::read(work.join(rel)).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                errors.push(Diagnostic::error("yaml.parse", "file is not UTF-8").at(shown, None));
                continue;
            }
            Err(e) => return Err(Failure::internal(format!("reading {shown}: {e}"))),
        };
        match convert(&text) {
            Ok(json) => {
                outputs.insert(out, (rel.clone(), json));
            }
            Err((msg, line)) => {
                let code = if line.is_some() {
                    "yaml.parse"
                } else {
                    "yaml-to-json.unrepresentable"
                };
                errors.push(Diagnostic::error(code, msg).at(shown, line));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Failure::Rejected(errors));
    }
    for (out, (rel, json)) in &outputs {
        std::fs::write(work.join(out), json)
            .map_err(|e| Failure::internal(format!("writing {}: {e}", display_path(out))))?;
        std::fs::remove_file(work.join(rel))
            .map_err(|e| Failure::internal(format!("removing {}: {e}", display_path(rel))))?;
    }
    Ok(vec![Diagnostic::info(
        "yaml-to-json.converted",
        format!("converted {} file(s)", outputs.len()),
    )])
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Replaces every *.yaml/*.yml file with its canonical JSON (RFC 8785); multi-document files become arrays.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::validate_config::<Config>(&config)
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let (_cfg, mut diags) = artgen_plugin_sdk::load_config::<Config>(&config)?;
        diags.extend(run(Path::new(WORK))?);
        Ok(Success::new(diags))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let yaml = "\
b: 1.0
a: [x, 'y', 2e-3, -0.0, 1e21, 007]
c: {z: null, y: ~, 10: ten, 9: nine, true: yes}
\"\\u20ac\": \"\\t\\\"q\\\"\"
tagged: !foo {k: v}
big: 9007199254740992
";
        assert_eq!(
            convert(yaml).unwrap(),
            r#"{"a":["x","y",0.002,0,1e+21,"007"],"b":1,"big":9007199254740992,"c":{"10":"ten","9":"nine","true":"yes","y":null,"z":null},"tagged":{"k":"v"},"€":"\t\"q\""}"#
        );
    }

    #[test]
    fn documents() {
        assert_eq!(convert("a: 1\n").unwrap(), r#"{"a":1}"#);
        assert_eq!(convert("a: 1\n---\n- 2\n---\n").unwrap(), r#"[{"a":1},[2],null]"#);
        assert_eq!(convert("").unwrap(), "null");
        assert_eq!(convert("--- 3\n").unwrap(), "3");
    }

    #[test]
    fn errors() {
        assert_eq!(convert("a: [\nb: 2").unwrap_err().1, Some(3));
        assert!(convert("a: .nan\n").is_err());
        assert!(convert("a: 9007199254740993\n").is_err());
        assert!(convert("? [1, 2]\n: x\n").is_err());
        assert!(convert("1: a\n'1': b\n").is_err());
    }

    #[test]
    fn deterministic_and_order_independent() {
        let a = convert("x: 1\ny: {b: 2, a: 1}\n").unwrap();
        let b = convert("y: {a: 1, b: 2}\nx: 1.0\n").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn tree() {
        let d = std::env::temp_dir().join(format!("artgen-y2j-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a.yaml"), "k: v\n").unwrap();
        std::fs::write(d.join("sub/b.yml"), "- 1\n").unwrap();
        std::fs::write(d.join("c.txt"), "keep").unwrap();
        run(&d).unwrap();
        let files: Vec<String> = artgen_plugin_sdk::walk_sorted(&d)
            .unwrap()
            .iter()
            .map(|p| display_path(p))
            .collect();
        assert_eq!(files, ["a.json", "c.txt", "sub/b.json"]);
        assert_eq!(std::fs::read_to_string(d.join("a.json")).unwrap(), r#"{"k":"v"}"#);
        std::fs::write(d.join("x.yaml"), "1").unwrap();
        std::fs::write(d.join("x.yml"), "2").unwrap();
        std::fs::write(d.join("a.yaml"), "3").unwrap();
        let Err(Failure::Rejected(errs)) = run(&d) else {
            panic!()
        };
        let codes: Vec<_> = errs
            .iter()
            .map(|e| (e.code.as_str(), e.location.as_ref().unwrap().path.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("yaml-to-json.conflict", "a.yaml"),
                ("yaml-to-json.conflict", "x.yml")
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
