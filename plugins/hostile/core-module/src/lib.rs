//! Hostile plugin `core-module` (design §11): a trivial, well-behaved typed plugin that is built for
//! `wasm32-wasip1`, so the file is a core module (preamble version 1), not a component. The host must answer
//! `PluginIncompatible` with the "core module" hint. Build: `cargo build --release --target wasm32-wasip1 -p core-module`
//! (it is not a default member, so the plain workspace build skips it).

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: a core module, not a component.",
            None,
        )
    }

    fn validate_config(_config: String) -> Vec<Diagnostic> {
        Vec::new()
    }

    fn transform(_config: String, _ctx: Context) -> Result<Success, Failure> {
        Ok(Success::new(vec![Diagnostic::info(
            "core-module.ran",
            "a core module ran; the host should have refused it",
        )]))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
