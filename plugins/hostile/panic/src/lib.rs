//! Hostile plugin `panic` (design §11): `transform` panics with "boom". With `panic = "abort"` the message goes
//! to stderr and the guest traps: `TransformTrapped`, with "boom" in the sanitised message.

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: panics in transform.",
            None,
        )
    }

    fn validate_config(_config: String) -> Vec<Diagnostic> {
        Vec::new()
    }

    fn transform(_config: String, _ctx: Context) -> Result<Success, Failure> {
        panic!("boom")
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
