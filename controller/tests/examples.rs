//! Runs `examples/run.sh` with the real binary and checks every artifact against the example's
//! `expected.txt` (one `<artifact>/<file>` per line).

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
    assert_eq!(checked, 3, "every example has an expected.txt");

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
}
