//! Hostile plugin `memory-bomb` (design §11): allocates and touches memory in chunks until it holds
//! `targetMiB` (default 2048) and must end as `TransformMemoryLimit`. An allocation the host refuses aborts
//! (Rust's allocation-failure handler), which traps. If nothing stops it, it succeeds with a warning.

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default = "default_target")]
    target_mib: u32,
    #[serde(default = "default_chunk")]
    chunk_mib: u32,
}

fn default_target() -> u32 {
    2048
}
fn default_chunk() -> u32 {
    16
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
"properties":{"targetMiB":{"type":"integer","minimum":1,"maximum":4095},"chunkMiB":{"type":"integer","minimum":1,"maximum":1024}}}"#;

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: grows memory towards 2 GiB.",
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
        let chunk = cfg.chunk_mib.max(1) as usize * 1024 * 1024;
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut total_mib = 0u32;
        while total_mib < cfg.target_mib {
            let mut block = vec![0u8; chunk];
            // Touch every page so the memory is really used.
            for i in (0..chunk).step_by(4096) {
                block[i] = 0xA5;
            }
            held.push(std::hint::black_box(block));
            total_mib += cfg.chunk_mib.max(1);
        }
        std::hint::black_box(&held);
        Ok(Success::new(vec![Diagnostic::warning(
            "memory-bomb.allocated",
            format!("allocated {total_mib} MiB and was not stopped"),
        )]))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
