//! Hostile plugin `nondeterminism-probe` (design §9, §11): records everything the host must pin.
//!
//! * `/work/readdir.txt`: the names of `/work` in raw `read_dir` order, one per line, taken before anything is
//!   written (the known caveat: the host cannot fix this order; the test excludes this file).
//! * `/work/probe.json` (keys sorted): `wallClockNanos` (`SystemTime::now` since the epoch), `monotonicElapsedNanos`
//!   (two `Instant::now` around some work), `randomHex` (16 bytes from `getrandom`, i.e. `wasi:random`),
//!   `hashMapOrder` (iteration order of a std `HashMap` holding `k00`…`k19`, seeded by `RandomState`),
//!   `hashOne` (`RandomState::new().hash_one("artgen")`), `env` (variables in the order given), `args`, `cwd`.
//!
//! Expected under artgen: time 0, env empty, args `["plugin"]`, and identical bytes across runs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use artgen_plugin_sdk::{Context, Diagnostic, Failure, Guest, PluginInfo, Success};
use serde_json::{Value, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn probe() -> Result<Value, String> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..10_000u64 {
        acc = std::hint::black_box(acc.wrapping_add(i * i));
    }
    let elapsed = start.elapsed().as_nanos() as u64;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| format!("getrandom: {e}"))?;
    let map: HashMap<String, u32> = (0..20).map(|i| (format!("k{i:02}"), i)).collect();
    let order: Vec<&String> = map.keys().collect();
    let hash_one = RandomState::new().hash_one("artgen");
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("error: {e}"));
    let mut out = BTreeMap::new();
    out.insert("wallClockNanos", json!(wall));
    out.insert("monotonicElapsedNanos", json!(elapsed));
    out.insert("randomHex", json!(hex(&random)));
    out.insert("hashMapOrder", json!(order));
    out.insert("hashOne", json!(hash_one.to_string()));
    out.insert("env", json!(env));
    out.insert("args", json!(args));
    out.insert("cwd", json!(cwd));
    Ok(serde_json::to_value(out).expect("plain JSON"))
}

struct Plugin;

impl Guest for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Hostile: records sources of nondeterminism.",
            None,
        )
    }

    fn validate_config(_config: String) -> Vec<Diagnostic> {
        Vec::new()
    }

    fn transform(_config: String, _ctx: Context) -> Result<Success, Failure> {
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir("/work").map_err(|e| Failure::internal(format!("read_dir /work: {e}")))?
        {
            let entry = entry.map_err(Failure::internal)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        let mut listing = names.join("\n");
        listing.push('\n');
        let value = probe().map_err(Failure::internal)?;
        let mut text = serde_json::to_string_pretty(&value).map_err(Failure::internal)?;
        text.push('\n');
        std::fs::write("/work/readdir.txt", listing)
            .map_err(|e| Failure::internal(format!("writing readdir.txt: {e}")))?;
        std::fs::write("/work/probe.json", text)
            .map_err(|e| Failure::internal(format!("writing probe.json: {e}")))?;
        Ok(Success::new(vec![Diagnostic::info(
            "probe.written",
            "wrote probe.json and readdir.txt",
        )]))
    }
}

artgen_plugin_sdk::export_plugin!(Plugin with_types_in artgen_plugin_sdk);
