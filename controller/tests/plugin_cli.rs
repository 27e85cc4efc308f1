//! `artgen plugin describe|run|digest|precompile` (design/plugins.md §12) with the real binary and real plugins
//! built from `plugins/`. Exit codes: 0 success, 1 plugin failure (including an unusable component such as a
//! core module), 2 usage or host error.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use artgen_e2e::plugins::{self, Built};
use artgen_e2e::tree::{DEPLOYMENT, snapshot, write};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn built() -> &'static Built {
    plugins::build().unwrap_or_else(|e| panic!("building plugins/: {e}"))
}

/// A compiled-code cache shared by the `run` tests (and kept across test runs) so that each plugin is compiled
/// once, not once per test process. The `describe` and `precompile` tests use none or their own.
fn cache_arg() -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cli-cache");
    format!("--plugin-cache-dir={}", dir.display())
}

fn artgen<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_artgen"))
        .arg("plugin")
        .args(args)
        .output()
        .unwrap()
}

/// `artgen plugin run` of `plugin` over `tree` with the shared compile cache, plus `extra` flags.
fn run_plugin(plugin: PathBuf, tree: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec![
        "run".into(),
        cache_arg().into(),
        "--plugin".into(),
        plugin.into_os_string(),
        "--tree".into(),
        tree.as_os_str().to_owned(),
    ];
    args.extend(extra.iter().map(OsString::from));
    artgen(args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stderr, where the error is.
fn last_err(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_owned()
}

#[track_caller]
fn code(o: &Output, want: i32) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "exit code\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr: {}", stdout(o), stderr(o)))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// digest

#[test]
fn digest_is_the_sha256_of_the_file() {
    let b = built();
    for name in ["values-templater", "command-sample", "core-module"] {
        let o = artgen([OsStr::new("digest"), b.wasm(name).as_os_str()]);
        code(&o, 0);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(b.bytes(name))));
        assert_eq!(stdout(&o), format!("{want}\n"), "{name}");
        assert_eq!(want, b.digest(name));
    }
    let o = artgen(["digest", "/nonexistent/plugin.wasm"]);
    code(&o, 2);
    assert!(last_err(&o).starts_with("error: "), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------
// describe

#[test]
fn describe_typed_sample() {
    let b = built();
    let file = b.wasm("values-templater");
    let o = artgen([OsStr::new("describe"), file.as_os_str(), OsStr::new("--json")]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["mode"], "typed");
    assert_eq!(v["world"], "artgen:transform/plugin@0.1.0");
    assert_eq!(v["name"], "values-templater");
    assert_eq!(v["version"], "0.1.0");
    assert_eq!(v["digest"], b.digest("values-templater").as_str());
    assert_eq!(v["size"], b.bytes("values-templater").len() as u64);
    assert!(!v["description"].as_str().unwrap().is_empty());
    assert!(
        v["configSchema"].is_object(),
        "the schema is parsed: {}",
        v["configSchema"]
    );
    assert!(strings(&v["exports"]).contains(&"artgen:transform/transformer@0.1.0"));
    let imports = strings(&v["imports"]);
    assert!(!imports.is_empty());
    assert!(
        imports
            .iter()
            .all(|i| i.starts_with("wasi:") || i.starts_with("artgen:transform/types@")),
        "{imports:?}"
    );
    assert_eq!(v["compiled"], true);
    eprintln!("describe values-templater: loadMillis {}", v["loadMillis"]);

    let o = artgen([OsStr::new("describe"), file.as_os_str()]);
    code(&o, 0);
    let text = stdout(&o);
    for want in [
        "mode         typed (world artgen:transform/plugin@0.1.0)",
        "name         values-templater",
        "artgen:transform/transformer@0.1.0",
        "config schema:",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn describe_command_sample() {
    let b = built();
    let o = artgen([
        OsStr::new("describe"),
        b.wasm("command-sample").as_os_str(),
        OsStr::new("--json"),
    ]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["mode"], "command");
    assert!(
        v["world"].as_str().unwrap().starts_with("wasi:cli/command@0.2."),
        "{}",
        v["world"]
    );
    assert!(v["name"].is_null() && v["configSchema"].is_null(), "{v}");
    assert!(
        strings(&v["exports"])
            .iter()
            .any(|e| e.starts_with("wasi:cli/run@0.2.")),
        "{}",
        v["exports"]
    );
    let o = artgen([OsStr::new("describe"), b.wasm("command-sample").as_os_str()]);
    code(&o, 0);
    assert!(stdout(&o).contains("mode         command"), "{}", stdout(&o));
}

/// An unusable component is a plugin failure (exit 1), not a usage error: the file was read fine.
#[test]
fn describe_core_module_is_incompatible() {
    let b = built();
    let core = b.wasm("core-module");
    for json in [false, true] {
        let mut args = vec![OsStr::new("describe"), core.as_os_str()];
        if json {
            args.push(OsStr::new("--json"));
        }
        let o = artgen(args);
        code(&o, 1);
        let err = last_err(&o);
        assert!(
            err.starts_with("error: ")
                && err.contains("PluginIncompatible")
                && err.contains("core WebAssembly module"),
            "{}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty(), "{}", stdout(&o));
    }
    let o = artgen(["describe", "/nonexistent/plugin.wasm"]);
    code(&o, 2);
}

// ---------------------------------------------------------------------------------------------------
// run

#[test]
fn run_image_tag_setter_reports_diff_and_diagnostics_and_leaves_the_tree_alone() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "deploy/web.yaml", DEPLOYMENT);
    write(&tree, "deploy/notes.txt", "untouched\n");
    write(&tree, "README.md", "# app\n");
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    let cfg = dir.path().join("cfg.yaml");
    std::fs::write(
        &cfg,
        "images:\n  - {name: nginx, newTag: \"1.27.2\"}\n  - {name: redis, newTag: \"7\"}\n",
    )
    .unwrap();
    let before = snapshot(&tree);
    let out = dir.path().join("out");

    let o = artgen([
        OsStr::new("run"),
        OsStr::new(&cache_arg()),
        OsStr::new("--plugin"),
        b.wasm("image-tag-setter").as_os_str(),
        OsStr::new("--tree"),
        tree.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("-o"),
        out.as_os_str(),
    ]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["result"], "Succeeded");
    assert_eq!(v["reason"], "");
    assert_eq!(v["mode"], "typed");
    assert_eq!(v["pluginDigest"], b.digest("image-tag-setter").as_str());
    assert_eq!(v["plugin"]["name"], "image-tag-setter");
    assert_eq!(strings(&v["diff"]["changed"]), ["deploy/web.yaml"]);
    assert!(strings(&v["diff"]["added"]).is_empty() && strings(&v["diff"]["removed"]).is_empty());
    let diags = v["diagnostics"].as_array().unwrap();
    assert!(
        diags
            .iter()
            .any(|d| d["code"] == "images.unmatched" && d["severity"] == "warning"),
        "{diags:?}"
    );
    assert!(v["fuelUsed"].as_u64().unwrap() > 0);
    assert!(v["peakMemoryBytes"].as_u64().unwrap() > 0);
    assert!(v["durationMillis"].is_u64() && v["compileMillis"].is_u64());
    assert!(v["inputDigest"].as_str().unwrap().starts_with("sha256:"));
    assert_ne!(v["inputDigest"], v["outputDigest"]);
    assert!(v["stdoutTail"].is_string() && v["stderrTail"].is_string());
    assert!(v.get("twice").is_none());
    eprintln!(
        "run image-tag-setter: durationMillis {} compileMillis {} fuelUsed {} peakMemoryBytes {}",
        v["durationMillis"], v["compileMillis"], v["fuelUsed"], v["peakMemoryBytes"]
    );

    assert_eq!(snapshot(&tree), before, "the input tree must not change");
    let rewritten = std::fs::read_to_string(out.join("deploy/web.yaml")).unwrap();
    assert!(rewritten.contains("image: nginx:1.27.2"), "{rewritten}");
    assert_eq!(std::fs::read_to_string(out.join("README.md")).unwrap(), "# app\n");
    assert!(out.join("empty").is_dir());
}

#[test]
fn run_values_templater_with_a_source_shows_the_diff() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let app = dir.path().join("app");
    write(
        &tree,
        "values.yaml.j2",
        "replicas: {{ replicas }}\nenv: {{ env }}\nartifact: {{ artgen.artifact }}\n",
    );
    write(&app, "values.yaml", "replicas: 2\nenv: dev\n");
    let cfg = dir.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"valuesFrom":"app","values":{"env":"prod"}}"#).unwrap();
    let (tree_before, app_before) = (snapshot(&tree), snapshot(&app));

    let o = artgen([
        OsStr::new("run"),
        OsStr::new(&cache_arg()),
        OsStr::new("--plugin"),
        b.wasm("values-templater").as_os_str(),
        OsStr::new("--tree"),
        tree.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
        OsStr::new(&format!("--source=app={}", app.display())),
        OsStr::new("--artifact=web"),
    ]);
    code(&o, 0);
    let text = stdout(&o);
    for want in [
        "result       Succeeded",
        "changes      1 added, 1 removed, 0 changed",
        "  + values.yaml",
        "  - values.yaml.j2",
        "peak memory",
        "fuel",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(snapshot(&tree), tree_before);
    assert_eq!(snapshot(&app), app_before);

    // The rendered values, via --output.
    let out = dir.path().join("out");
    let o = artgen([
        OsStr::new("run"),
        OsStr::new(&cache_arg()),
        OsStr::new("--plugin"),
        b.wasm("values-templater").as_os_str(),
        OsStr::new("--tree"),
        tree.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
        OsStr::new(&format!("--source=app={}", app.display())),
        OsStr::new("--artifact=web"),
        OsStr::new("--output"),
        out.as_os_str(),
    ]);
    code(&o, 0);
    assert_eq!(
        std::fs::read_to_string(out.join("values.yaml")).unwrap(),
        "replicas: 2\nenv: prod\nartifact: web\n"
    );
}

#[test]
fn run_twice_passes_for_yaml_to_json() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "z/b.yaml", "b: [3, 1, 2]\n");
    write(&tree, "a.yaml", "k: v\nn: 1.0\n");
    write(&tree, "m/n/o.yml", "- 1\n---\n- 2\n");
    write(&tree, "keep.txt", "text\n");
    let before = snapshot(&tree);
    let o = run_plugin(b.wasm("yaml-to-json"), &tree, &["--twice", "--json"]);
    code(&o, 0);
    let v = json(&o);
    assert_eq!(v["result"], "Succeeded");
    assert_eq!(strings(&v["diff"]["added"]), ["a.json", "m/n/o.json", "z/b.json"]);
    assert_eq!(
        strings(&v["diff"]["removed"]),
        ["a.yaml", "m/n/o.yml", "z/b.yaml"]
    );
    let twice = &v["twice"];
    assert_eq!(twice["identical"], true, "{twice}");
    assert_eq!(twice["result"], "Succeeded");
    assert_eq!(twice["outputDigest"], v["outputDigest"]);
    assert_eq!(twice["fuelUsed"], v["fuelUsed"], "fuel is deterministic");
    assert!(strings(&twice["differences"]["changed"]).is_empty());
    assert_eq!(snapshot(&tree), before);

    let o = run_plugin(b.wasm("yaml-to-json"), &tree, &["--twice"]);
    code(&o, 0);
    assert!(stdout(&o).contains("--twice      identical"), "{}", stdout(&o));
}

#[test]
fn run_secret_scanner_finding_a_secret_exits_1_with_the_reason() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "ok.yaml", "a: b\n");
    write(
        &tree,
        "conf/creds.env",
        "# creds\nAWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP\n",
    );
    let before = snapshot(&tree);
    let o = run_plugin(b.wasm("secret-scanner"), &tree, &["--json", "--twice"]);
    code(&o, 1);
    let err = last_err(&o);
    assert!(err.starts_with("error: TransformFailed: "), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["result"], "Failed");
    assert_eq!(v["reason"], "TransformFailed");
    assert!(v.get("diff").is_none() && v.get("twice").is_none(), "{v}");
    let d = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "secrets.aws-access-key-id")
        .unwrap_or_else(|| panic!("{}", v["diagnostics"]));
    assert_eq!(d["severity"], "error");
    assert_eq!(d["path"], "conf/creds.env");
    assert_eq!(d["line"], 2);
    assert!(
        !stdout(&o).contains("AKIAABCDEFGHIJKLMNOP"),
        "the secret is never printed"
    );
    assert_eq!(snapshot(&tree), before);
}

/// The host checks the config against the plugin's schema first, and says which field is wrong.
#[test]
fn run_with_a_config_outside_the_schema_exits_1_naming_the_field() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "deploy/web.yaml", DEPLOYMENT);
    let cfg = dir.path().join("cfg.yaml");
    std::fs::write(&cfg, "images:\n  - {name: nginx, newTag: \"has space\"}\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let o = run_plugin(b.wasm("image-tag-setter"), &tree, &["--config", cfg, "--json"]);
    code(&o, 1);
    let err = last_err(&o);
    assert!(
        err.starts_with("error: PluginConfigInvalid: ")
            && err.contains("config does not match the plugin's schema"),
        "{}",
        stderr(&o)
    );
    let v = json(&o);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "artgen.config-schema", "{v}");
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("config /images/0/newTag: "),
        "{d}"
    );
    assert_eq!(v["fuelUsed"], 0, "the plugin did not run: {v}");
}

#[test]
fn run_hostile_panic_exits_1_trapped() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "a.txt", "a\n");
    let o = run_plugin(b.wasm("panic"), &tree, &[]);
    code(&o, 1);
    let err = last_err(&o);
    assert!(
        err.contains("TransformTrapped") && err.contains("boom"),
        "{}",
        stderr(&o)
    );
    assert!(
        stdout(&o).contains("result       Failed (TransformTrapped)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn run_usage_errors_exit_2() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    write(&tree, "a.yaml", "a: 1\n");
    let bad_cfg = dir.path().join("bad.yaml");
    std::fs::write(&bad_cfg, "- not\n- a mapping\n").unwrap();
    let plugin = b.wasm("yaml-to-json");
    let base = |extra: &[&OsStr]| {
        let cache = cache_arg();
        let mut a = vec![
            OsStr::new("run"),
            OsStr::new(&cache),
            OsStr::new("--plugin"),
            plugin.as_os_str(),
        ];
        a.extend_from_slice(extra);
        artgen(a)
    };
    // Missing --tree directory, a config that is not a mapping, a limit above the hard ceiling, a bad flag.
    let missing = dir.path().join("missing");
    for (what, o) in [
        ("missing tree", base(&[OsStr::new("--tree"), missing.as_os_str()])),
        (
            "bad config",
            base(&[
                OsStr::new("--tree"),
                tree.as_os_str(),
                OsStr::new("--config"),
                bad_cfg.as_os_str(),
            ]),
        ),
        (
            "fuel above the ceiling",
            base(&[OsStr::new("--tree"), tree.as_os_str(), OsStr::new("--fuel=300G")]),
        ),
        (
            "malformed fuel",
            base(&[OsStr::new("--tree"), tree.as_os_str(), OsStr::new("--fuel=lots")]),
        ),
    ] {
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        // Ours end with `error: …`; clap's flag errors add a `--help` hint after theirs.
        assert!(stderr(&o).contains("error: "), "{what}: {}", stderr(&o));
    }
    // A tiny fuel limit is a plugin failure, not a usage error.
    let o = base(&[OsStr::new("--tree"), tree.as_os_str(), OsStr::new("--fuel=1000")]);
    code(&o, 1);
    assert!(last_err(&o).contains("TransformOutOfFuel"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------------
// precompile

#[test]
fn precompile_warms_the_cache() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let names = ["values-templater", "image-tag-setter"];
    let mut args = vec![OsStr::new("precompile").to_owned()];
    args.extend(names.iter().map(|n| b.wasm(n).into_os_string()));
    args.push(OsStr::new("--plugin-cache-dir").to_owned());
    args.push(cache.clone().into_os_string());
    let o = artgen(&args);
    code(&o, 0);
    let text = stdout(&o);
    eprintln!("precompile:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, name) in lines.iter().zip(names) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols[0], b.digest(name));
        assert!(cols[1].ends_with(" ms"), "{line}");
        assert_eq!(cols[2], "compiled", "{line}");
        let hex = b.digest(name).trim_start_matches("sha256:").to_owned();
        let found = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .any(|e| e.path().join(format!("{hex}.cwasm")).is_file());
        assert!(found, "no {hex}.cwasm under {}", cache.display());
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Warm: loaded from the cache, by precompile and by describe.
    let mut json_args = args.clone();
    json_args.push(OsStr::new("--json").to_owned());
    let o = artgen(&json_args);
    code(&o, 0);
    let v = json(&o);
    for row in v.as_array().unwrap() {
        assert_eq!(row["result"], "cached", "{row}");
    }
    let o = artgen([
        OsStr::new("describe"),
        b.wasm("values-templater").as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--plugin-cache-dir"),
        cache.as_os_str(),
    ]);
    code(&o, 0);
    assert_eq!(json(&o)["compiled"], false);

    // A core module fails (exit 1) and is named.
    let o = artgen([
        OsStr::new("precompile"),
        b.wasm("core-module").as_os_str(),
        OsStr::new("--plugin-cache-dir"),
        cache.as_os_str(),
    ]);
    code(&o, 1);
    assert!(last_err(&o).contains("PluginIncompatible"), "{}", stderr(&o));
    assert!(stdout(&o).contains("\tfailed\t"), "{}", stdout(&o));
}
