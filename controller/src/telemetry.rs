//! Logging (spec §11 `--log-level`, `--log-encoding`): JSON lines by default, as Flux's controllers. `RUST_LOG`
//! overrides the level filter; wasmtime and cranelift are kept at warn.

use tracing_subscriber::EnvFilter;

pub fn init(level: &str, encoding: &str) -> Result<(), String> {
    let level = match level {
        "trace" | "debug" | "info" | "warn" | "error" => level,
        other => return Err(format!("--log-level: unknown level '{other}'")),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},wasmtime=warn,cranelift_codegen=warn,hyper=warn,kube=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match encoding {
        "json" => builder.json().flatten_event(true).try_init(),
        "console" => builder.try_init(),
        other => {
            return Err(format!(
                "--log-encoding: unknown encoding '{other}' (json or console)"
            ));
        }
    };
    installed.map_err(|e| format!("installing the logger: {e}"))
}
