//! A real Kubernetes control plane for end-to-end tests: etcd and kube-apiserver as local processes on
//! loopback, with generated certificates, a kubeconfig kube-rs loads, Flux's source CRDs installed and one new
//! namespace per test (design/test-control-plane.md).
//!
//! ```no_run
//! # async fn t() -> Result<(), artgen_e2e::control_plane::Error> {
//! use artgen_e2e::control_plane::ControlPlane;
//! let cp = ControlPlane::shared().await?; // started on first use, once per test binary
//! let client = cp.client().await?;
//! let namespace = cp.namespace("my-test").await?; // "t-my-test-<6 hex>", never reused
//! # let _ = (client, namespace); Ok(()) }
//! ```
//!
//! There is no kube-controller-manager, scheduler or kubelet: namespaces are never deleted, there is no garbage
//! collection and no Pod ever runs (§7 of the design).
//!
//! Environment:
//! - binaries: `TEST_ASSET_KUBE_APISERVER` + `TEST_ASSET_ETCD`, `KUBEBUILDER_ASSETS`, `ARTGEN_KUBE_BIN_CACHE`
//!   (see [`Binaries::provide`]); Flux CRDs: `ARTGEN_FLUX_CRDS_DIR`;
//! - `ARTGEN_CONTROL_PLANE_START_TIMEOUT` or `KUBEBUILDER_CONTROLPLANE_START_TIMEOUT` (default 120s; `90`,
//!   `90s`, `2m`, `1500ms`);
//! - `KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT=true` streams both logs to stderr.

mod binaries;
mod certs;
mod kubeconfig;
mod process;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs;
use std::future::Future;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

pub use self::binaries::{Binaries, Origin, cache_root, flux_crds_dir, flux_source_crds, load_crds};
pub use self::certs::ADMIN_USER;
use self::certs::{CertFiles, Certs};
use self::process::{Keeper, Process, free_ports};

/// Field manager of the harness's server-side applies.
pub const FIELD_MANAGER: &str = "artgen-e2e";
/// Label set on every namespace [`ControlPlane::namespace`] creates.
pub const NAMESPACE_LABEL: &str = "artgen.test/e2e";

const POLL_INTERVAL: Duration = Duration::from_millis(200);
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);
const PORT_ATTEMPTS: u32 = 3;
const LOG_LINES: usize = 100;
/// /dev/shm is used when it has at least this much free space.
const MIN_SHM_FREE: u64 = 1 << 30;

/// Everything that can go wrong while providing, starting or using the control plane.
#[derive(thiserror::Error)]
pub enum Error {
    #[error("missing {what}; {hint}")]
    Missing { what: String, hint: String },
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("I/O on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {name} ({})", program.display())]
    Spawn {
        name: &'static str,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited before the control plane was ready ({status}); logs:\n{logs}")]
    Exited {
        name: &'static str,
        status: String,
        logs: String,
    },
    #[error(
        "control plane not ready after {timeout:?}: waiting for {waiting_for} (last error: {last_error}); \
         logs:\n{logs}"
    )]
    Timeout {
        waiting_for: String,
        timeout: Duration,
        last_error: String,
        logs: String,
    },
    #[error("certificate generation")]
    Certs(#[from] rcgen::Error),
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kube client")]
    Client(#[source] kube::Error),
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("YAML in {}", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: yaml_serde::Error,
    },
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the shared control plane failed to start: {0}")]
    Shared(String),
    #[error("the control plane's keeper thread is gone")]
    KeeperGone,
    #[error("a blocking task of the harness failed")]
    Join(#[source] tokio::task::JoinError),
}

/// `?` in a test prints `Debug`: show the whole chain of causes instead of the nested structs.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&report(self))
    }
}

/// An error and its sources, joined with ": ".
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How to start a control plane.
#[derive(Clone)]
pub struct Options {
    /// Install Flux's source CRDs (default true).
    pub flux_crds: bool,
    /// More CRDs to apply and wait for, for example ours.
    pub crds: Vec<CustomResourceDefinition>,
    /// For all readiness conditions together.
    pub start_timeout: Duration,
    /// Stream both logs to stderr.
    pub attach_output: bool,
}

impl Default for Options {
    /// Flux CRDs, and the timeout and output settings from the environment.
    fn default() -> Self {
        let timeout = [
            "ARTGEN_CONTROL_PLANE_START_TIMEOUT",
            "KUBEBUILDER_CONTROLPLANE_START_TIMEOUT",
        ]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| parse_duration(&v)))
        .unwrap_or(DEFAULT_START_TIMEOUT);
        let attach = std::env::var("KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        Self {
            flux_crds: true,
            crds: Vec::new(),
            start_timeout: timeout,
            attach_output: attach,
        }
    }
}

/// A running etcd + kube-apiserver pair. Dropping it stops both and removes its work directory; the
/// [`shared`](Self::shared) one lives until the process exits, when the kernel kills both (`PR_SET_PDEATHSIG`).
pub struct ControlPlane {
    server: String,
    etcd_url: String,
    work_dir: PathBuf,
    kubeconfig_path: PathBuf,
    kubeconfig: String,
    config: kube::Config,
    binaries: Binaries,
    version: String,
    startup: Duration,
    /// kube-apiserver first, so that it stops before etcd.
    processes: Vec<Process>,
    keeper: Keeper,
}

static SHARED: tokio::sync::OnceCell<Result<ControlPlane, String>> = tokio::sync::OnceCell::const_new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use with [`Options::default`]. A failure is
    /// remembered: every later caller gets the same error at once.
    pub async fn shared() -> Result<&'static ControlPlane, Error> {
        SHARED
            .get_or_init(|| async { Self::start(Options::default()).await.map_err(|e| report(&e)) })
            .await
            .as_ref()
            .map_err(|e| Error::Shared(e.clone()))
    }

    /// Provides the binaries, starts etcd and kube-apiserver and waits until the apiserver is ready, the
    /// `default` namespace exists and every CRD is established.
    pub async fn start(options: Options) -> Result<Self, Error> {
        install_crypto_provider();
        let binaries = blocking(Binaries::provide).await?;
        let mut crds = if options.flux_crds {
            blocking(flux_source_crds).await?
        } else {
            Vec::new()
        };
        crds.extend(options.crds.iter().cloned());

        let started = Instant::now();
        let deadline = started + options.start_timeout;
        let work_dir = blocking(new_work_dir).await?;
        // On any failure (or cancellation) below, the processes are stopped by their Drop and this removes the
        // work directory; errors carry the log tails.
        let mut cleanup = RemoveOnDrop(Some(work_dir.clone()));
        let certs = Certs::generate()?;
        let files = certs.write(&work_dir)?;
        let kubeconfig_path = work_dir.join("kubeconfig");
        let keeper = Keeper::start()?;

        let mut attempt = 0;
        let (processes, server, etcd_url, kubeconfig, config) = loop {
            attempt += 1;
            let [etcd_port, peer_port, api_port] = free_ports()?;
            let etcd_url = format!("http://127.0.0.1:{etcd_port}");
            let data_dir = work_dir.join("etcd");
            let _ = fs::remove_dir_all(&data_dir);
            let etcd = Process::spawn(
                &keeper,
                "etcd",
                &binaries.etcd,
                &etcd_args(&data_dir, etcd_port, peer_port),
                work_dir.join("etcd.log"),
                options.attach_output,
            )?;
            let http = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| Error::Io {
                    path: "reqwest client".into(),
                    source: std::io::Error::other(e),
                })?;
            let health = format!("{etcd_url}/health");
            let waited = poll(
                &format!("etcd {health}"),
                options.start_timeout,
                deadline,
                &[&etcd],
                || etcd_healthy(&http, &health),
            )
            .await;
            match waited {
                Ok(()) => {}
                Err(Error::Exited { .. }) if etcd.port_conflict() && attempt < PORT_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }

            let server = format!("https://127.0.0.1:{api_port}");
            let kubeconfig = kubeconfig::render(&server, &certs);
            kubeconfig::write(&kubeconfig_path, &kubeconfig)?;
            let config = kubeconfig::load(&kubeconfig_path).await?;
            let client = Client::try_from(config.clone()).map_err(Error::Client)?;
            let apiserver = Process::spawn(
                &keeper,
                "kube-apiserver",
                &binaries.kube_apiserver,
                &apiserver_args(&work_dir, &files, &etcd_url, api_port),
                work_dir.join("kube-apiserver.log"),
                options.attach_output,
            )?;
            let waited = poll(
                &format!("{server}/readyz"),
                options.start_timeout,
                deadline,
                &[&apiserver, &etcd],
                || readyz(&client),
            )
            .await;
            match waited {
                Ok(()) => {}
                Err(Error::Exited { .. }) if apiserver.port_conflict() && attempt < PORT_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
            break (vec![apiserver, etcd], server, etcd_url, kubeconfig, config);
        };

        let client = Client::try_from(config.clone()).map_err(Error::Client)?;
        let mut cp = Self {
            server,
            etcd_url,
            work_dir,
            kubeconfig_path,
            kubeconfig,
            config,
            binaries,
            version: String::new(),
            startup: Duration::ZERO,
            processes,
            keeper,
        };
        {
            let procs: Vec<&Process> = cp.processes.iter().collect();
            let namespaces: Api<Namespace> = Api::all(client.clone());
            poll(
                "namespace default",
                options.start_timeout,
                deadline,
                &procs,
                || async {
                    match namespaces.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not found yet".to_owned()),
                        Err(e) => Err(report(&e)),
                    }
                },
            )
            .await?;
            apply_and_wait(&client, &crds, options.start_timeout, deadline, &procs).await?;
        }
        cp.version = client
            .apiserver_version()
            .await
            .map_err(|source| Error::Api {
                what: "GET /version".into(),
                source,
            })?
            .git_version;
        cp.startup = started.elapsed();
        cleanup.0 = None;
        eprintln!(
            "artgen-e2e: control plane {} (kube-apiserver {}, {:?}) ready in {:.1}s; work dir {}",
            cp.server,
            cp.version,
            cp.binaries.origin,
            cp.startup.as_secs_f64(),
            cp.work_dir.display()
        );
        Ok(cp)
    }

    /// A new client. Create one per test: a kube `Client` belongs to the tokio runtime it was made on.
    pub async fn client(&self) -> Result<Client, Error> {
        install_crypto_provider();
        Client::try_from(self.config.clone()).map_err(Error::Client)
    }

    /// The kube config of the admin user (TLS verification on).
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Creates the namespace `t-<prefix>-<6 hex>` and returns its name. Each call makes a new one; namespaces
    /// are never deleted (nothing would finalize the deletion) and never reused.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let client = self.client().await?;
        let api: Api<Namespace> = Api::all(client);
        let mut prefix = sanitize(prefix);
        prefix.truncate(63 - "t--abcdef".len());
        let prefix = prefix.trim_end_matches('-');
        loop {
            let name = format!("t-{prefix}-{}", random_hex6());
            let namespace = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &namespace).await {
                Ok(_) => return Ok(name),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(source) => {
                    return Err(Error::Api {
                        what: format!("create namespace {name}"),
                        source,
                    });
                }
            }
        }
    }

    /// Server-side applies `crds` and waits until each reports `Established=True`.
    pub async fn apply_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let client = self.client().await?;
        let timeout = Options::default().start_timeout;
        let procs: Vec<&Process> = self.processes.iter().collect();
        apply_and_wait(&client, crds, timeout, Instant::now() + timeout, &procs).await
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `http://127.0.0.1:<port>` of etcd.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The kubeconfig file (mode 0600) in the work directory, for binaries under test (`KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The kubeconfig's text.
    pub fn kubeconfig(&self) -> &str {
        &self.kubeconfig
    }

    /// Holds certificates, etcd's data, the kubeconfig and `etcd.log` / `kube-apiserver.log`.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// `gitVersion` of the apiserver, for example `v1.37.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// From spawning etcd to the last CRD established (excludes providing the binaries).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The last lines of both logs.
    pub fn logs(&self, lines: usize) -> String {
        logs(&self.processes.iter().collect::<Vec<_>>(), lines)
    }

    /// `Some((name, status))` of a process that has exited; a running control plane has none.
    pub fn exited(&self) -> Option<(&'static str, String)> {
        self.processes
            .iter()
            .find_map(|p| p.exited().map(|s| (p.name(), s.to_string())))
    }

    /// Process ids of kube-apiserver and etcd.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.processes.iter().map(|p| (p.name(), p.pid())).collect()
    }

    /// Stops both processes and removes the work directory (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in &mut self.processes {
            p.stop();
        }
        self.processes.clear();
        self.keeper.shutdown();
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// kube-rs and reqwest use rustls without a built-in provider choice; the workspace uses `ring`.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn etcd_args(data_dir: &Path, client: u16, peer: u16) -> Vec<String> {
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={c}"),
        format!("--advertise-client-urls={c}"),
        format!("--listen-peer-urls={p}"),
        format!("--initial-advertise-peer-urls={p}"),
        format!("--initial-cluster=default={p}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(work_dir: &Path, files: &CertFiles, etcd_url: &str, port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // Since 1.37 the lease and master-count endpoint reconcilers refuse a loopback advertise address
        // ("cannot use public IP 127.0.0.1 with endpoint reconciler: ... may not be in the loopback range").
        // Nothing here needs the endpoints of the `kubernetes` Service.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", work_dir.display()),
        format!("--tls-cert-file={}", files.serving_cert.display()),
        format!("--tls-private-key-file={}", files.serving_key.display()),
        format!("--client-ca-file={}", files.ca_cert.display()),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer=https://127.0.0.1:{port}"),
        format!(
            "--service-account-key-file={}",
            files.service_account_public_key.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            files.service_account_key.display()
        ),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

async fn etcd_healthy(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = http.get(url).send().await.map_err(|e| report(&e))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| report(&e))?;
    let healthy = serde_json::from_str::<serde_json::Value>(&body)
        .is_ok_and(|v| v.get("health").and_then(|h| h.as_str()) == Some("true"));
    if status.is_success() && healthy {
        Ok(())
    } else {
        Err(format!("{status}: {}", body.trim()))
    }
}

async fn readyz(client: &Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map(|_| ())
        .map_err(|e| report(&e))
}

async fn apply_and_wait(
    client: &Client,
    crds: &[CustomResourceDefinition],
    timeout: Duration,
    deadline: Instant,
    procs: &[&Process],
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.name_any();
        let mut crd = crd.clone();
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.status = None;
        poll(&format!("apply CRD {name}"), timeout, deadline, procs, || async {
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .map(|_| ())
                .map_err(|e| report(&e))
        })
        .await?;
    }
    for crd in crds {
        let name = crd.name_any();
        poll(
            &format!("CRD {name} Established"),
            timeout,
            deadline,
            procs,
            || async {
                let current = api.get(&name).await.map_err(|e| report(&e))?;
                let established = current
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                if established {
                    Ok(())
                } else {
                    Err("not Established yet".to_owned())
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Polls `check` every 200 ms until it succeeds, a process exits, or `deadline` passes.
async fn poll<F, Fut>(
    waiting_for: &str,
    timeout: Duration,
    deadline: Instant,
    procs: &[&Process],
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    loop {
        for p in procs {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    name: p.name(),
                    status: status.to_string(),
                    logs: logs(procs, LOG_LINES),
                });
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let last_error = match tokio::time::timeout(remaining.min(Duration::from_secs(10)), check()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => "the check itself timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                waiting_for: waiting_for.to_owned(),
                timeout,
                last_error,
                logs: logs(procs, LOG_LINES),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn logs(procs: &[&Process], lines: usize) -> String {
    procs
        .iter()
        .map(|p| {
            format!(
                "--- last {lines} lines of {} ---\n{}",
                p.log_path().display(),
                p.log_tail(lines)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(Error::Join)?
}

/// `/dev/shm/artgen-cp-<pid>` (a `-<n>` suffix for further control planes of the same process), or the same
/// under `$TMPDIR` when /dev/shm is missing or has less than 1 GiB free. Removes stale directories of dead
/// processes first.
fn new_work_dir() -> Result<PathBuf, Error> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let shm = Path::new("/dev/shm");
    let shm_ok = shm.is_dir()
        && rustix::fs::statvfs(shm).is_ok_and(|s| s.f_bavail.saturating_mul(s.f_frsize) >= MIN_SHM_FREE);
    let base = if shm_ok {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for dir in [shm.to_path_buf(), std::env::temp_dir()] {
        remove_stale(&dir);
    }
    let pid = std::process::id();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(if n == 0 {
        format!("artgen-cp-{pid}")
    } else {
        format!("artgen-cp-{pid}-{n}")
    });
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    let ours = std::process::id();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("artgen-cp-")) else {
            continue;
        };
        let Ok(pid) = rest.split('-').next().unwrap_or_default().parse::<u32>() else {
            continue;
        };
        if pid != ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Lowercase alphanumerics and '-', as a DNS-1123 label needs.
fn sanitize(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "test".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn random_hex6() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = RandomState::new().hash_one((n, std::process::id(), Instant::now()));
    format!("{:06x}", h & 0xff_ffff)
}

/// `90`, `90s`, `2m`, `1500ms`, `1m30s` (Go-style durations as envtest takes them).
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(value * factor);
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn namespace_names() {
        assert_eq!(sanitize("My_Test::case"), "my-test--case");
        assert_eq!(sanitize("--"), "test");
        assert_eq!(random_hex6().len(), 6);
    }

    #[test]
    fn certificates_and_kubeconfig() {
        let certs = Certs::generate().unwrap();
        assert!(certs.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            certs
                .service_account_key
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(
            certs
                .service_account_public_key
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        let text = kubeconfig::render("https://127.0.0.1:6443", &certs);
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some(kubeconfig::CLUSTER));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
    }
}
