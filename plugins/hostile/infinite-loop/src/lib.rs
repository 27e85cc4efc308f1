//! Hostile plugin `infinite-loop` (design §11): `{"mode": "spin"}` (default) burns CPU forever and must end as
//! `TransformOutOfFuel` with the same fuel on every run; `{"mode": "sleep"}` sleeps for an hour, which fuel does
//! not see, and must end as `TransformTimeout`.

use std::time::Duration;

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Spin,
    Sleep,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Mode,
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
"properties":{"mode":{"enum":["spin","sleep"]}}}"#;

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: never returns.",
            Some(SCHEMA),
        )
    }

    fn validate_config(config: String) -> Vec<Diagnostic> {
        artgen_plugin_sdk::parse_config_diagnostics::<Config>(&config)
            .err()
            .unwrap_or_default()
    }

    fn transform(config: String, _ctx: Context) -> Result<Success, Failure> {
        let cfg: Config = artgen_plugin_sdk::parse_config(&config)?;
        match cfg.mode {
            Mode::Spin => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            Mode::Sleep => {
                std::thread::sleep(Duration::from_secs(3600));
                Ok(Success::new(vec![Diagnostic::warning(
                    "infinite-loop.woke",
                    "slept for an hour and was not stopped",
                )]))
            }
        }
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
