//! Where kube-apiserver, etcd and the Flux source CRDs come from (design/test-control-plane.md §1–2).
//!
//! Binaries, first match wins:
//! 1. `TEST_ASSET_KUBE_APISERVER` and `TEST_ASSET_ETCD` (envtest convention);
//! 2. `$KUBEBUILDER_ASSETS/{kube-apiserver,etcd}`;
//! 3. our cache `${ARTGEN_KUBE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artgen/kube}/<key>/`;
//! 4. a build through `tests/kubebins/build.sh` (needs Go; it takes the cache lock and fills the cache);
//! 5. otherwise an error naming what is missing and the command to run. Never a skip.

use std::env;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Error;

/// The directory of the Go wrapper module (`go.mod`, `go.sum`, `build.sh`).
pub fn kubebins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubebins")
}

/// The script that prints the directory of Flux's source CRDs.
pub fn fluxcrds_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fluxcrds/fetch.sh")
}

/// How the binaries were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `TEST_ASSET_KUBE_APISERVER` / `TEST_ASSET_ETCD`.
    TestAssets,
    /// `KUBEBUILDER_ASSETS`.
    KubebuilderAssets,
    /// Our cache, found without Go.
    Cache,
    /// `tests/kubebins/build.sh` (a cache hit or a build).
    BuildScript,
}

#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub origin: Origin,
}

impl Binaries {
    /// Finds or builds the binaries. This blocks, for up to half an hour when it has to build: call it from a
    /// blocking context. The build script's progress goes to our stderr.
    pub fn provide() -> Result<Self, Error> {
        let apiserver = env::var_os("TEST_ASSET_KUBE_APISERVER").filter(|v| !v.is_empty());
        let etcd = env::var_os("TEST_ASSET_ETCD").filter(|v| !v.is_empty());
        match (apiserver, etcd) {
            (Some(a), Some(e)) => {
                return Self::checked(
                    PathBuf::from(a),
                    PathBuf::from(e),
                    Origin::TestAssets,
                    "TEST_ASSET_*",
                );
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Missing {
                    what: "one of TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD".into(),
                    hint: "set both, or neither".into(),
                });
            }
            (None, None) => {}
        }
        if let Some(dir) = env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return Self::checked(
                dir.join("kube-apiserver"),
                dir.join("etcd"),
                Origin::KubebuilderAssets,
                "KUBEBUILDER_ASSETS",
            );
        }
        if on_path("go") {
            return Self::build();
        }
        if let Some(dir) = cached_without_go()? {
            return Self::checked(
                dir.join("kube-apiserver"),
                dir.join("etcd"),
                Origin::Cache,
                "the cache",
            );
        }
        Err(Error::Missing {
            what: format!(
                "kube-apiserver and etcd: TEST_ASSET_KUBE_APISERVER/TEST_ASSET_ETCD and KUBEBUILDER_ASSETS are \
                 unset, {} holds no build of {}, and `go` is not on PATH to build them",
                cache_root().display(),
                cache_pattern().unwrap_or_else(|_| "tests/kubebins".into()),
            ),
            hint: "install Go 1.26.x, then run `bash tests/kubebins/build.sh` (10-25 min once, cached after)"
                .into(),
        })
    }

    fn build() -> Result<Self, Error> {
        let script = kubebins_dir().join("build.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| Error::Spawn {
                name: "build.sh",
                program: script.clone(),
                source,
            })?;
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout).map_err(|source| Error::Io {
                path: script.clone(),
                source,
            })?;
        }
        let status = child.wait().map_err(|source| Error::Io {
            path: script.clone(),
            source,
        })?;
        if !status.success() {
            return Err(Error::Command {
                command: format!("bash {}", script.display()),
                status: status.to_string(),
                output: "its output is above, on stderr".into(),
            });
        }
        let dir = stdout
            .lines()
            .last()
            .map(PathBuf::from)
            .ok_or_else(|| Error::Command {
                command: format!("bash {}", script.display()),
                status: status.to_string(),
                output: "it printed no directory".into(),
            })?;
        Self::checked(
            dir.join("kube-apiserver"),
            dir.join("etcd"),
            Origin::BuildScript,
            "build.sh",
        )
    }

    fn checked(kube_apiserver: PathBuf, etcd: PathBuf, origin: Origin, from: &str) -> Result<Self, Error> {
        for path in [&kube_apiserver, &etcd] {
            if !is_executable(path) {
                return Err(Error::Missing {
                    what: format!("{} (from {from})", path.display()),
                    hint: "point the variable at an executable, or unset it to use tests/kubebins/build.sh"
                        .into(),
                });
            }
        }
        Ok(Self {
            kube_apiserver,
            etcd,
            origin,
        })
    }
}

/// `${ARTGEN_KUBE_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/artgen/kube}`, as in build.sh.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = env::var_os("ARTGEN_KUBE_BIN_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("artgen/kube")
}

/// The cache key with `*` for the Go version: `k8s-<version>-*-<os>-<arch>-<sha256(go.mod ‖ go.sum)[..12]>`.
fn cache_pattern() -> Result<String, Error> {
    let (prefix, suffix) = cache_key_parts()?;
    Ok(format!("{prefix}*{suffix}"))
}

fn cache_key_parts() -> Result<(String, String), Error> {
    let dir = kubebins_dir();
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|source| Error::Io { path, source })
    };
    let go_mod = read("go.mod")?;
    let go_sum = read("go.sum")?;
    let version = String::from_utf8_lossy(&go_mod)
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("k8s.io/kubernetes"), Some(v)) if v.starts_with('v') => Some(v.to_owned()),
                _ => None,
            }
        })
        .ok_or_else(|| Error::Missing {
            what: format!(
                "the k8s.io/kubernetes requirement in {}",
                dir.join("go.mod").display()
            ),
            hint: "run `bash tests/kubebins/generate.sh`".into(),
        })?;
    let mut hash = Sha256::new();
    hash.update(&go_mod);
    hash.update(&go_sum);
    let sum = hex::encode(hash.finalize());
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    Ok((
        format!("k8s-{version}-"),
        format!("-{}-{arch}-{}", env::consts::OS, &sum[..12]),
    ))
}

/// Step 3 without Go: a cache directory for this go.mod/go.sum, whatever Go version built it.
fn cached_without_go() -> Result<Option<PathBuf>, Error> {
    let (prefix, suffix) = cache_key_parts()?;
    let Ok(entries) = fs::read_dir(cache_root()) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(&suffix)
        })
        .map(|e| e.path())
        .filter(|d| is_executable(&d.join("kube-apiserver")) && is_executable(&d.join("etcd")))
        .collect();
    found.sort();
    Ok(found.pop())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| is_executable(&dir.join(program))))
}

/// The directory holding `source.toolkit.fluxcd.io_*.yaml`: `ARTGEN_FLUX_CRDS_DIR`, or what
/// `tests/fluxcrds/fetch.sh` prints (Flux source-controller v1.9.1's `config/crd/bases`, fallback v1.8.0, from
/// its Go module zip).
pub fn flux_crds_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = env::var_os("ARTGEN_FLUX_CRDS_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let script = fluxcrds_script();
    if !on_path("go") {
        // Without Go, an earlier fetch in the module cache still does.
        if let Some(dir) = flux_crds_in_module_cache() {
            return Ok(dir);
        }
        return Err(Error::Missing {
            what: "`go` on PATH, to fetch Flux's source CRDs from the source-controller Go module".into(),
            hint: format!(
                "install Go 1.26.x and run `bash {}`, or set ARTGEN_FLUX_CRDS_DIR",
                "tests/fluxcrds/fetch.sh"
            ),
        });
    }
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            name: "fetch.sh",
            program: script.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("bash {}", script.display()),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from)
        .ok_or_else(|| Error::Command {
            command: format!("bash {}", script.display()),
            status: out.status.to_string(),
            output: "it printed no directory".into(),
        })
}

/// The source-controller versions `tests/fluxcrds/fetch.sh` tries, in order (keep the two lists equal).
pub const FLUX_SOURCE_CONTROLLER_VERSIONS: [&str; 2] = ["v1.9.1", "v1.8.0"];

/// `${GOMODCACHE:-${GOPATH:-$HOME/go}/pkg/mod}/github.com/fluxcd/source-controller@<v>/config/crd/bases`.
fn flux_crds_in_module_cache() -> Option<PathBuf> {
    let modcache = env::var_os("GOMODCACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let gopath = env::var_os("GOPATH")
                .filter(|v| !v.is_empty())
                .map(|p| env::split_paths(&p).next().unwrap_or_default())
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join("go")))?;
            Some(gopath.join("pkg/mod"))
        })?;
    FLUX_SOURCE_CONTROLLER_VERSIONS
        .iter()
        .map(|v| {
            modcache.join(format!(
                "github.com/fluxcd/source-controller@{v}/config/crd/bases"
            ))
        })
        .find(|d| d.join("source.toolkit.fluxcd.io_gitrepositories.yaml").is_file())
}

/// Flux's source CRDs (GitRepository, OCIRepository, Bucket, HelmChart, HelmRepository, ExternalArtifact),
/// as published in source-controller's module.
pub fn flux_source_crds() -> Result<Vec<CustomResourceDefinition>, Error> {
    let dir = flux_crds_dir()?;
    let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("source.toolkit.fluxcd.io_") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in &files {
        crds.extend(load_crds(file)?);
    }
    if crds.is_empty() {
        return Err(Error::Missing {
            what: format!("source.toolkit.fluxcd.io_*.yaml in {}", dir.display()),
            hint: "run `bash tests/fluxcrds/fetch.sh`".into(),
        });
    }
    Ok(crds)
}

/// Every CustomResourceDefinition in a (multi-document) YAML file; other kinds are ignored.
pub fn load_crds(path: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut crds = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).map_err(|source| Error::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        let crd = serde_json::from_value(value).map_err(|source| Error::Json {
            what: format!("a CRD in {}", path.display()),
            source,
        })?;
        crds.push(crd);
    }
    Ok(crds)
}
