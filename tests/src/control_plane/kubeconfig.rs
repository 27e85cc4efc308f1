//! The kubeconfig of a control plane: written to disk for binaries under test (`KUBECONFIG`) and loaded back
//! through kube's own parser, so tests exercise the same path as users.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Error;
use super::certs::Certs;

pub const CLUSTER: &str = "artgen-test";
pub const USER: &str = "admin";

/// A kubeconfig for `server` that trusts our CA and authenticates with the admin client certificate.
pub fn render(server: &str, certs: &Certs) -> String {
    let b64 = |pem: &str| STANDARD.encode(pem.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CLUSTER}
  cluster:
    server: \"{server}\"
    certificate-authority-data: {ca}
users:
- name: {USER}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {CLUSTER}
  context:
    cluster: {CLUSTER}
    user: {USER}
    namespace: default
current-context: {CLUSTER}
",
        ca = b64(&certs.ca_cert),
        cert = b64(&certs.admin_cert),
        key = b64(&certs.admin_key),
    )
}

/// Writes the kubeconfig with mode 0600 (it holds the admin key).
pub fn write(path: &Path, contents: &str) -> Result<(), Error> {
    super::certs::write(path, contents, true)
}

/// Loads a kubeconfig file the way users' tools do: `Kubeconfig::read_from` + `Config::from_custom_kubeconfig`.
/// TLS verification stays on.
pub async fn load(path: &Path) -> Result<kube::Config, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
}
