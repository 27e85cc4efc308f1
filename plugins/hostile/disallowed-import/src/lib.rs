//! Hostile plugin `disallowed-import` (design §11): a normal typed plugin that also imports
//! `test:forbidden/thing`, an interface outside `wasi:{cli,io,clocks,filesystem,random,sockets}`. The host must
//! answer `PluginIncompatible` naming that import, before instantiating anything.

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};

#[allow(unsafe_code, clippy::all)]
mod forbidden {
    wit_bindgen::generate!({
        inline: r#"
            package test:forbidden;

            interface thing {
                poke: func() -> u32;
            }

            world forbidden {
                import thing;
            }
        "#,
        world: "forbidden",
        type_section_suffix: "forbidden",
    });
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: imports test:forbidden/thing.",
            None,
        )
    }

    fn validate_config(_config: String) -> Vec<Diagnostic> {
        Vec::new()
    }

    fn transform(_config: String, _ctx: Context) -> Result<Success, Failure> {
        let n = forbidden::test::forbidden::thing::poke();
        Ok(Success::new(vec![Diagnostic::warning(
            "disallowed-import.called",
            format!("test:forbidden/thing.poke returned {n}"),
        )]))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
