//! `artgen build` with `transforms:` (design/plugins.md §2, §12): real plugins built from `plugins/`, pinned by
//! digest, allow-listed with `--plugin-allow-digest`; deny by default; the artifact digest is reproducible.

use std::path::Path;
use std::process::Command;

use artgen_e2e::plugins;
use artgen_e2e::tree::{DEPLOYMENT, write};

struct Setup {
    dir: tempfile::TempDir,
    templater: String,
    setter: String,
}

fn setup() -> Setup {
    let built = plugins::build().unwrap_or_else(|e| panic!("building plugins/: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "app/deploy/web.yaml", DEPLOYMENT);
    write(
        root,
        "app/deploy/values.yaml.j2",
        "replicas: {{ replicas }}\nenv: {{ env }}\n",
    );
    let plugin_dir = root.join("plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    for name in ["values-templater", "image-tag-setter"] {
        std::fs::copy(built.wasm(name), plugin_dir.join(format!("{name}.wasm"))).unwrap();
    }
    let (templater, setter) = (built.digest("values-templater"), built.digest("image-tag-setter"));
    write(
        root,
        "generator.yaml",
        &format!(
            r#"apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {{name: web, namespace: apps}}
spec:
  sources:
    - {{alias: app, kind: GitRepository, name: app}}
    - {{alias: plugins, kind: OCIRepository, name: transforms}}
  artifacts:
    - name: web
      copy: [{{from: "@app/deploy/**", to: "@artifact/"}}]
      transforms:
        - name: set-images
          plugin: {{source: {{alias: plugins, path: image-tag-setter.wasm}}, digest: "{setter}"}}
          config: {{images: [{{name: nginx, newTag: "1.27.2"}}]}}
        - name: render
          plugin: {{source: {{alias: plugins, path: values-templater.wasm}}, digest: "{templater}"}}
          config: {{values: {{replicas: 3, env: prod}}}}
"#
        ),
    );
    Setup {
        dir,
        templater,
        setter,
    }
}

fn build(s: &Setup, out: &str, extra: &[&str]) -> std::process::Output {
    build_in(s.dir.path(), out, extra)
}

/// `artgen build --json` of `root/generator.yaml` with the sources `app` and `plugins` under `root`, into
/// `root/out`, with a compile cache in `root/cache`.
fn build_in(root: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_artgen"))
        .arg("build")
        .arg("-f")
        .arg(root.join("generator.yaml"))
        .arg(format!("--source=app={}", root.join("app").display()))
        .arg(format!("--source=plugins={}", root.join("plugins").display()))
        .arg("-o")
        .arg(root.join(out))
        .arg("--json")
        .arg(format!("--plugin-cache-dir={}", root.join("cache").display()))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn templater_and_image_setter_run_in_build_and_are_reproducible() {
    let s = setup();
    let allow = [
        format!("--plugin-allow-digest={}", s.setter),
        format!("--plugin-allow-digest={}", s.templater),
    ];
    let args: Vec<&str> = allow.iter().map(String::as_str).collect();
    let first = build(&s, "out1", &args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let bytes = std::fs::read(s.dir.path().join("out1/web.tar.gz")).unwrap();
    let listing = artgen_e2e::archive::verify(&bytes).unwrap();
    let text = |p: &str| String::from_utf8(listing.files[p].data.clone()).unwrap();
    assert_eq!(
        listing.files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["values.yaml", "web.yaml"],
        "the template was rendered and removed"
    );
    assert_eq!(text("values.yaml"), "replicas: 3\nenv: prod\n");
    assert!(
        text("web.yaml").contains("image: nginx:1.27.2"),
        "{}",
        text("web.yaml")
    );

    // Same inputs, same plugins, same config: same digest (second run loads compiled code from the cache).
    let second = build(&s, "out2", &args);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let digest = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(digest(&first), digest(&second));
    assert_eq!(
        std::fs::read(s.dir.path().join("out2/web.tar.gz")).unwrap(),
        bytes
    );
}

#[test]
fn plugins_are_denied_by_default_and_can_be_disabled() {
    let s = setup();
    let denied = build(&s, "out", &[]);
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("not allowed") || stderr.contains("PluginNotAllowed"),
        "{stderr}"
    );
    assert!(!s.dir.path().join("out").exists(), "nothing written on failure");

    let allow = format!("--plugin-allow-digest={}", s.setter);
    let disabled = build(&s, "out", &[&allow, "--plugins=disabled"]);
    assert_eq!(disabled.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&disabled.stderr);
    assert!(stderr.to_lowercase().contains("disabled"), "{stderr}");
    fn cwasm_files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        cwasm_files(&p)
                    } else {
                        usize::from(p.extension().is_some_and(|x| x == "cwasm"))
                    }
                })
                .sum()
        })
    }
    assert_eq!(
        cwasm_files(&s.dir.path().join("cache")),
        0,
        "refused before anything was compiled"
    );
}

/// A command-mode plugin in a second language (`plugins/go-command`, mainline Go adapted into a component by the
/// test harness) runs through a generator's transforms exactly like the Rust ones: pinned, allow-listed,
/// reproducible.
#[test]
fn go_command_plugin_runs_in_build() {
    let built = plugins::build().unwrap_or_else(|e| panic!("building plugins/: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "app/deploy/web.yaml", DEPLOYMENT);
    write(root, "app/deploy/notes.txt", "not a manifest\n");
    std::fs::create_dir_all(root.join("plugins/go")).unwrap();
    std::fs::copy(
        built.wasm("go-command"),
        root.join("plugins/go/label-stamper.wasm"),
    )
    .unwrap();
    let digest = built.digest("go-command");
    write(
        root,
        "generator.yaml",
        &format!(
            r#"apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {{name: web, namespace: apps}}
spec:
  sources:
    - {{alias: app, kind: GitRepository, name: app}}
    - {{alias: plugins, kind: OCIRepository, name: transforms}}
  artifacts:
    - name: web
      copy: [{{from: "@app/deploy/**", to: "@artifact/"}}]
      transforms:
        - name: stamp-labels
          plugin: {{source: {{alias: plugins, path: go/label-stamper.wasm}}, digest: "{digest}"}}
          config: {{labels: {{app.kubernetes.io/part-of: shop, team: payments}}}}
"#
        ),
    );
    let run = |out: &str, extra: &[&str]| build_in(root, out, extra);
    let denied = run("denied", &[]);
    assert_eq!(denied.status.code(), Some(1), "not allowed without the digest");

    let allow = format!("--plugin-allow-digest={digest}");
    let first = run("out1", &[&allow]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let bytes = std::fs::read(root.join("out1/web.tar.gz")).unwrap();
    let listing = artgen_e2e::archive::verify(&bytes).unwrap();
    let text = |p: &str| String::from_utf8(listing.files[p].data.clone()).unwrap();
    assert_eq!(
        text("web.yaml"),
        DEPLOYMENT.replace(
            "  name: web\n",
            "  name: web\n  labels:\n    app.kubernetes.io/part-of: \"shop\"\n    team: \"payments\"\n"
        )
    );
    assert_eq!(text("notes.txt"), "not a manifest\n");

    let second = run("out2", &[&allow]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let digest_of = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(digest_of(&first), digest_of(&second));
    assert_eq!(std::fs::read(root.join("out2/web.tar.gz")).unwrap(), bytes);
}

/// The other samples through `artgen build`: a command-mode plugin, YAML to canonical JSON, and the secret
/// scanner, which passes a clean tree and fails the build (nothing written) when it finds a key.
#[test]
fn command_sample_yaml_to_json_and_secret_scanner_in_build() {
    let built = plugins::build().unwrap_or_else(|e| panic!("building plugins/: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "app/deploy/web.yaml", DEPLOYMENT);
    write(root, "app/deploy/NOTES.txt", "notes\n");
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    let names = ["command-sample", "yaml-to-json", "secret-scanner"];
    let mut allow = Vec::new();
    for name in names {
        std::fs::copy(built.wasm(name), root.join(format!("plugins/{name}.wasm"))).unwrap();
        allow.push(format!("--plugin-allow-digest={}", built.digest(name)));
    }
    let pin = |name: &str| {
        format!(
            "plugin: {{source: {{alias: plugins, path: {name}.wasm}}, digest: \"{}\"}}",
            built.digest(name)
        )
    };
    write(
        root,
        "generator.yaml",
        &format!(
            r##"apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {{name: web, namespace: apps}}
spec:
  sources:
    - {{alias: app, kind: GitRepository, name: app}}
    - {{alias: plugins, kind: OCIRepository, name: transforms}}
  artifacts:
    - name: web
      copy: [{{from: "@app/deploy/**", to: "@artifact/"}}]
      transforms:
        - {{name: header, {}, config: {{header: "# generated"}}}}
        - {{name: to-json, {}}}
        - {{name: scan, {}}}
"##,
            pin("command-sample"),
            pin("yaml-to-json"),
            pin("secret-scanner")
        ),
    );
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    let run = |out: &str| build_in(root, out, &allow);
    let clean = run("clean");
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let listing =
        artgen_e2e::archive::verify(&std::fs::read(root.join("clean/web.tar.gz")).unwrap()).unwrap();
    let text = |p: &str| String::from_utf8(listing.files[p].data.clone()).unwrap();
    assert_eq!(
        listing.files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["NOTES.txt", "web.json"]
    );
    assert_eq!(text("NOTES.txt"), "# generated\nnotes\n");
    assert_eq!(
        text("web.json"),
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"image":"nginx:1.0","name":"web"}]}}}}"#
    );

    write(
        root,
        "app/deploy/NOTES.txt",
        &format!("key: AKIA{}\n", "IOSFODNN7EXAMPLE"),
    );
    let leaked = run("leaked");
    assert_eq!(leaked.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&leaked.stderr);
    assert!(
        stderr.contains("TransformFailed") || stderr.contains("transform scan"),
        "{stderr}"
    );
    assert!(stderr.contains("secrets.aws-access-key-id"), "{stderr}");
    assert!(!root.join("leaked").exists(), "nothing written on failure");
}
