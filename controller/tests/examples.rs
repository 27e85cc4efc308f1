//! Runs `examples/run.sh` with the real binary and checks every artifact against the example's
//! `expected.txt` (one `<artifact>/<file>` per line). The `transforms` example needs the Rust plugins, which
//! run.sh builds with `plugins/build.sh` (the wasm targets of rust-toolchain.toml must be installed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use flate2::read::GzDecoder;

fn files_of(archive: &Path) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(GzDecoder::new(std::fs::File::open(archive).unwrap()));
    let mut out = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn examples_build_the_expected_artifacts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(root.join("examples/run.sh"))
        .arg(out.path())
        .env("ARTGEN", env!("CARGO_BIN_EXE_artgen"))
        // artgen's compiled-plugin cache (default `$XDG_CACHE_HOME/artgen/plugins`): not the user's.
        .env("XDG_CACHE_HOME", out.path().join(".cache"))
        .status()
        .unwrap();
    assert!(status.success(), "examples/run.sh failed");

    let mut checked = 0;
    for example in std::fs::read_dir(root.join("examples")).unwrap() {
        let example = example.unwrap().path();
        let Ok(expected) = std::fs::read_to_string(example.join("expected.txt")) else {
            continue;
        };
        let expected: BTreeSet<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        let name = example.file_name().unwrap();
        let mut actual = BTreeSet::new();
        for archive in std::fs::read_dir(out.path().join(name)).unwrap() {
            let archive = archive.unwrap().path();
            let artifact = archive
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(".tar.gz")
                .to_owned();
            for (path, _) in files_of(&archive) {
                actual.insert(format!("{artifact}/{path}"));
            }
        }
        let actual: BTreeSet<&str> = actual.iter().map(String::as_str).collect();
        assert_eq!(actual, expected, "example {name:?}");
        checked += 1;
    }
    assert_eq!(checked, 4, "every example has an expected.txt");

    // The Helm example's point: production values merged into the chart's values, chart defaults kept.
    let values = files_of(&out.path().join("helm-values/podinfo-composite.tar.gz"))
        .into_iter()
        .find(|(p, _)| p == "podinfo/values.yaml")
        .unwrap()
        .1;
    let values: yaml_serde::Value = yaml_serde::from_slice(&values).unwrap();
    assert_eq!(values["replicaCount"], yaml_serde::Value::from(3));
    assert_eq!(values["image"]["tag"], yaml_serde::Value::from("6.7.1"));
    assert_eq!(
        values["image"]["repository"],
        yaml_serde::Value::from("ghcr.io/stefanprodan/podinfo")
    );

    // The transforms example: the values template rendered (source defaults under the generator's values) and
    // the images pinned to the release.
    let files = files_of(&out.path().join("transforms/storefront-prod.tar.gz"));
    let file = |name: &str| -> yaml_serde::Value {
        let bytes = &files.iter().find(|(p, _)| p == name).unwrap().1;
        yaml_serde::from_slice(bytes).unwrap()
    };
    let values = file("cache/values.yaml");
    assert_eq!(values["architecture"], yaml_serde::Value::from("replication"));
    assert_eq!(values["replica"]["replicaCount"], yaml_serde::Value::from(3));
    assert_eq!(
        values["image"]["tag"],
        yaml_serde::Value::from("7.4.2"),
        "a default kept"
    );
    assert_eq!(
        values["commonLabels"]["environment"],
        yaml_serde::Value::from("prod")
    );
    let pod = &file("storefront/deployment.yaml")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        yaml_serde::Value::from("ghcr.io/acme/storefront:2.4.1")
    );
    assert_eq!(
        pod["initContainers"][0]["image"],
        yaml_serde::Value::from("ghcr.io/acme/storefront-migrate:2.4.1")
    );
}
