//! Hostile plugin `output-flood` (design §11). Config `{"mode": …}`:
//!
//! * `big-file`: writes `/work/big.bin`, `bytes` long (default 2 GiB), in 1 MiB writes ⇒ `TransformOutputInvalid`;
//! * `many-files`: creates `files` files (default 100 000) `/work/flood/NNNNNN.txt` ⇒ `TransformOutputInvalid`;
//! * `deep-tree`: nests `depth` directories (default 200) `/work/deep/d/d/…/leaf.txt` ⇒ `TransformOutputInvalid`;
//! * `stderr`: writes `bytes` (default 10 MiB) to stderr and succeeds ⇒ a truncated log and `artgen.log-truncated`.
//!
//! A write error (e.g. the host refused it) ⇒ `internal` with the error.

use std::io::Write;
use std::path::PathBuf;

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    BigFile,
    ManyFiles,
    DeepTree,
    Stderr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    files: Option<u32>,
    #[serde(default)]
    depth: Option<u32>,
}

const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,
"required":["mode"],"properties":{"mode":{"enum":["big-file","many-files","deep-tree","stderr"]},
"bytes":{"type":"integer","minimum":0},"files":{"type":"integer","minimum":0},"depth":{"type":"integer","minimum":0}}}"#;

const MIB: usize = 1 << 20;

fn flood(cfg: &Config) -> std::io::Result<String> {
    match cfg.mode {
        Mode::BigFile => {
            let total = cfg.bytes.unwrap_or(2 << 30);
            let chunk = vec![0xABu8; MIB];
            let mut f = std::fs::File::create("/work/big.bin")?;
            let mut written = 0u64;
            while written < total {
                let n = (total - written).min(MIB as u64) as usize;
                f.write_all(&chunk[..n])?;
                written += n as u64;
            }
            Ok(format!("wrote {written} bytes"))
        }
        Mode::ManyFiles => {
            let n = cfg.files.unwrap_or(100_000);
            std::fs::create_dir_all("/work/flood")?;
            for i in 0..n {
                std::fs::write(format!("/work/flood/{i:06}.txt"), b"x")?;
            }
            Ok(format!("created {n} files"))
        }
        Mode::DeepTree => {
            let depth = cfg.depth.unwrap_or(200);
            let mut dir = PathBuf::from("/work/deep");
            for _ in 0..depth {
                dir.push("d");
            }
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("leaf.txt"), b"deep")?;
            Ok(format!("nested {depth} directories"))
        }
        Mode::Stderr => {
            let total = cfg.bytes.unwrap_or(10 << 20) as usize;
            let mut line = vec![b'E'; 1023];
            line.push(b'\n');
            let mut err = std::io::stderr().lock();
            let mut written = 0usize;
            while written < total {
                let n = (total - written).min(line.len());
                err.write_all(&line[..n])?;
                written += n;
            }
            err.flush()?;
            Ok(format!("wrote {written} bytes to stderr"))
        }
    }
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: floods the tree or stderr.",
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
        match flood(&cfg) {
            Ok(what) => Ok(Success::new(vec![Diagnostic::info("output-flood.done", what)])),
            Err(e) => Err(Failure::internal(format!("output-flood: {e}"))),
        }
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
