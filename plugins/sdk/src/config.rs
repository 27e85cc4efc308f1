//! Config parsing. The host passes the transform's `config` as canonical JSON (design §9); an absent config
//! arrives as `{}` (an empty string or `null` is treated the same way).

use serde::de::DeserializeOwned;

use crate::{Diagnostic, Failure, has_errors};

/// Code of every diagnostic produced by a config that does not deserialize.
pub const INVALID_CONFIG: &str = "config.invalid";

/// A plugin's config type: serde does the shape, [`PluginConfig::check`] the rules serde cannot express.
pub trait PluginConfig: DeserializeOwned {
    /// Semantic checks; any error diagnostic makes the config invalid.
    fn check(&self) -> Vec<Diagnostic> {
        Vec::new()
    }
}

/// Deserializes the config; a serde error becomes `Failure::InvalidConfig` with one `config.invalid` diagnostic.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, Failure> {
    parse_config_diagnostics(json).map_err(Failure::InvalidConfig)
}

/// Like [`parse_config`], returning the diagnostics themselves.
pub fn parse_config_diagnostics<T: DeserializeOwned>(json: &str) -> Result<T, Vec<Diagnostic>> {
    let text = json.trim();
    let text = if text.is_empty() || text == "null" {
        "{}"
    } else {
        text
    };
    serde_json::from_str(text).map_err(|e| {
        vec![
            Diagnostic::error(INVALID_CONFIG, format!("config: {e}"))
                .with_hint("see the plugin's config schema"),
        ]
    })
}

/// What `validate-config` returns: parse errors, else the result of [`PluginConfig::check`].
pub fn validate_config<T: PluginConfig>(json: &str) -> Vec<Diagnostic> {
    match parse_config_diagnostics::<T>(json) {
        Ok(cfg) => cfg.check(),
        Err(diags) => diags,
    }
}

/// Parses and checks the config at the start of `transform`: errors ⇒ `Failure::InvalidConfig`.
/// Warnings from `check` are returned with the config so the plugin can report them.
pub fn load_config<T: PluginConfig>(json: &str) -> Result<(T, Vec<Diagnostic>), Failure> {
    let cfg = parse_config::<T>(json)?;
    let diags = cfg.check();
    if has_errors(&diags) {
        Err(Failure::InvalidConfig(diags))
    } else {
        Ok((cfg, diags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        n: u32,
    }
    impl PluginConfig for Cfg {
        fn check(&self) -> Vec<Diagnostic> {
            if self.n > 3 {
                vec![Diagnostic::error("cfg.n", "n > 3")]
            } else {
                vec![]
            }
        }
    }

    #[test]
    fn parse_and_check() {
        assert_eq!(parse_config::<Cfg>("").unwrap().n, 0);
        assert_eq!(parse_config::<Cfg>("null").unwrap().n, 0);
        assert_eq!(parse_config::<Cfg>(r#"{"n":2}"#).unwrap().n, 2);
        match parse_config::<Cfg>(r#"{"m":2}"#) {
            Err(Failure::InvalidConfig(d)) => {
                assert_eq!(d[0].code, INVALID_CONFIG);
                assert!(d[0].message.contains("unknown field `m`"), "{}", d[0].message);
            }
            other => panic!("{other:?}"),
        }
        assert!(validate_config::<Cfg>(r#"{"n":1}"#).is_empty());
        assert_eq!(validate_config::<Cfg>(r#"{"n":5}"#)[0].code, "cfg.n");
        assert!(matches!(
            load_config::<Cfg>(r#"{"n":5}"#),
            Err(Failure::InvalidConfig(_))
        ));
    }
}
