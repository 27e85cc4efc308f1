//! The host-side config check (design/plugins.md §4, §5 step 5): a typed plugin's `describe()` may declare a
//! JSON Schema (2020-12) for its config, checked here before `validate-config` runs, so a wrong config is
//! reported with the field at fault whatever the plugin's own checks say.
//!
//! Schemas come from plugins and are untrusted: nothing is ever loaded from outside the schema itself (boon's
//! default loader would read `file://` references from the host), the standard meta-schemas are built in,
//! and `pattern` uses the linear-time `regex` crate. Size is capped by `describe()` (1 MiB).

use boon::{Compiler, Draft, SchemaIndex, Schemas, UrlLoader, ValidationError};

use super::report::{Diagnostic, Severity};

/// Where the schema is registered; never fetched.
const LOCATION: &str = "urn:artgen:plugin-config-schema";
/// Diagnostics kept from one check: the first ones say enough.
const MAX_FINDINGS: usize = 20;
pub const CODE: &str = "artgen.config-schema";

/// Refuses every reference that is not part of the schema document.
struct NoLoader;

impl UrlLoader for NoLoader {
    fn load(&self, url: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        Err(format!("refusing to load '{url}': a config schema must be self-contained").into())
    }
}

/// Checks `config` (JSON text) against `schema` (JSON Schema text). `Err` is a schema that does not
/// compile (the plugin's fault); `Ok` holds one error diagnostic per violation, empty when it conforms.
pub fn check(schema: &str, config: &str) -> Result<Vec<Diagnostic>, String> {
    let schema: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| format!("config schema is not JSON: {e}"))?;
    let config: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("config is not JSON: {e}"))?;
    let mut schemas = Schemas::new();
    let index = compile(schema, &mut schemas).map_err(|e| format!("config schema does not compile: {e}"))?;
    let Err(error) = schemas.validate(&config, index) else {
        return Ok(Vec::new());
    };
    let mut findings = Vec::new();
    leaves(&error, &mut findings);
    Ok(findings)
}

fn compile(schema: serde_json::Value, schemas: &mut Schemas) -> Result<SchemaIndex, Box<boon::CompileError>> {
    let mut compiler = Compiler::new();
    compiler.use_loader(Box::new(NoLoader));
    compiler.set_default_draft(Draft::V2020_12);
    compiler.add_resource(LOCATION, schema)?;
    Ok(compiler.compile(LOCATION, schemas)?)
}

/// The innermost errors (the ones that name a keyword), as diagnostics naming the config location.
fn leaves(error: &ValidationError<'_, '_>, out: &mut Vec<Diagnostic>) {
    if out.len() >= MAX_FINDINGS {
        return;
    }
    if error.causes.is_empty() {
        let at = error.instance_location.to_string();
        let at = if at.is_empty() { "/".to_owned() } else { at };
        let message = super::report::sanitize(&format!("config {at}: {}", error.kind), 1024);
        out.push(Diagnostic::host(Severity::Error, CODE, message));
        return;
    }
    for cause in &error.causes {
        leaves(cause, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "required": ["images"],
        "properties": {
            "images": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "newTag": {"type": "string", "pattern": "^[a-z0-9.]+$"}}
            }}
        }
    }"#;

    #[test]
    fn a_conforming_config_has_no_findings() {
        assert!(
            check(SCHEMA, r#"{"images":[{"name":"a","newTag":"1.2"}]}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn each_violation_names_its_location() {
        let found = check(SCHEMA, r#"{"images":[{"newTag":"Not Valid"}],"extra":1}"#).unwrap();
        let text: Vec<String> = found.iter().map(|d| d.message.clone()).collect();
        assert_eq!(found.len(), 3, "{text:?}");
        assert!(
            found
                .iter()
                .all(|d| d.severity == Severity::Error && d.code == CODE)
        );
        assert!(
            text.iter()
                .any(|m| m.starts_with("config /:") && m.contains("extra")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|m| m.starts_with("config /images/0:") && m.contains("name")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|m| m.starts_with("config /images/0/newTag:")),
            "{text:?}"
        );
    }

    #[test]
    fn references_outside_the_schema_are_never_loaded() {
        for r in [
            "file:///etc/passwd",
            "http://127.0.0.1:1/schema.json",
            "other.json",
        ] {
            let schema = format!(r#"{{"$ref": "{r}"}}"#);
            let e = check(&schema, "{}").unwrap_err();
            assert!(e.contains("does not compile"), "{r}: {e}");
        }
        // A reference inside the document works.
        let local = r##"{"$defs": {"n": {"type": "number"}}, "properties": {"x": {"$ref": "#/$defs/n"}}}"##;
        assert_eq!(check(local, r#"{"x": "one"}"#).unwrap().len(), 1);
    }

    #[test]
    fn a_schema_that_is_not_json_schema_is_the_plugins_fault() {
        assert!(check("not json", "{}").unwrap_err().contains("not JSON"));
        assert!(
            check(r#"{"type": 12}"#, "{}")
                .unwrap_err()
                .contains("does not compile")
        );
    }
}
