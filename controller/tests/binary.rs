//! The real `artgen controller` binary under the generated RBAC (test-control-plane.md §6 "RBAC check"):
//! `controller/deploy/rbac.yaml` is applied, the binary runs with a ServiceAccount token from TokenRequest,
//! leader election on, JSON logs, and must reconcile a generator end to end. A missing verb in the
//! manifests fails this test. Then the process is restarted: same URL and digest, no second download.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use artgen::crd::{ArtifactGenerator, ExternalArtifact};
use artgen_e2e::control_plane::{ControlPlane, flux_source_crds};
use artgen_e2e::fixtures::{SourceKind, Sources};
use artgen_e2e::source_server::SourceServer;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Applies rbac.yaml with the namespace replaced and the cluster-scoped names made unique to `ns`.
async fn apply_rbac(client: &Client, ns: &str) -> Result<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml"))?;
    let text = text.replace("namespace: flux-system", &format!("namespace: {ns}"));
    let cluster_name = format!("source-watcher-{ns}");
    let pp = PatchParams::apply("e2e").force();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_owned();
        let name = v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "ServiceAccount" => {
                Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .patch(&name, &pp, &Patch::Apply(&v))
                    .await?;
            }
            "Role" => {
                Api::<Role>::namespaced(client.clone(), ns)
                    .patch(&name, &pp, &Patch::Apply(&v))
                    .await?;
            }
            "RoleBinding" => {
                Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .patch(&name, &pp, &Patch::Apply(&v))
                    .await?;
            }
            "ClusterRole" => {
                v["metadata"]["name"] = cluster_name.clone().into();
                Api::<ClusterRole>::all(client.clone())
                    .patch(&cluster_name, &pp, &Patch::Apply(&v))
                    .await?;
            }
            "ClusterRoleBinding" => {
                v["metadata"]["name"] = cluster_name.clone().into();
                v["roleRef"]["name"] = cluster_name.clone().into();
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&cluster_name, &pp, &Patch::Apply(&v))
                    .await?;
            }
            other => return Err(format!("unexpected kind {other} in rbac.yaml").into()),
        }
    }
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(
            "source-watcher",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    Ok(token
        .status
        .and_then(|s| s.token)
        .ok_or("TokenRequest without a token")?)
}

/// A kubeconfig for the ServiceAccount token, trusting the control plane's CA.
fn token_kubeconfig(cp: &ControlPlane, token: &str, path: &Path) -> Result {
    let admin: Value = yaml_serde::from_str(cp.kubeconfig())?;
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .ok_or("admin kubeconfig without CA data")?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": cp.server(), "certificate-authority-data": ca}}],
        "users": [{"name": "source-watcher", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "source-watcher"}}],
        "current-context": "e2e",
    });
    std::fs::write(path, yaml_serde::to_string(&config)?)?;
    Ok(())
}

/// Plays notification-controller: records the JSON bodies POSTed to it.
struct EventSink {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl EventSink {
    fn start() -> Result<EventSink> {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                };
                if let Some(body) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    sink.lock().unwrap().push(body);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Ok(EventSink { addr, bodies })
    }
}

struct Running {
    child: Child,
    logs: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(kubeconfig: &Path, ns: &str, storage: &Path, ports: [u16; 3], events: &str) -> Result<Running> {
        let [storage_port, metrics_port, health_port] = ports;
        let mut child = Command::new(env!("CARGO_BIN_EXE_artgen"))
            .args([
                "controller",
                "--watch-all-namespaces=false",
                "--enable-leader-election",
                "--leader-election-lease-duration=15s",
                "--leader-election-renew-deadline=10s",
                "--leader-election-retry-period=1s",
                &format!("--storage-path={}", storage.display()),
                &format!("--storage-addr=127.0.0.1:{storage_port}"),
                &format!("--metrics-addr=127.0.0.1:{metrics_port}"),
                &format!("--health-addr=127.0.0.1:{health_port}"),
                &format!("--events-addr={events}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUNTIME_NAMESPACE", ns)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, logs) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
                eprintln!("artgen: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running { child, logs })
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) -> Result {
        send_sigterm(self.child.id())?;
        let Some(status) = artgen_e2e::wait::exit(&mut self.child, WAIT)? else {
            let _ = self.child.kill();
            return Err("controller did not exit within 60s of SIGTERM".into());
        };
        assert!(status.success(), "controller exited with {status} after SIGTERM");
        Ok(())
    }
}

fn send_sigterm(pid: u32) -> Result {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if status.success() {
        Ok(())
    } else {
        Err("kill -TERM failed".into())
    }
}

async fn wait<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    artgen_e2e::wait::until(what, WAIT, probe).await
}

async fn http_get(url: &str) -> Result<(u16, String)> {
    match reqwest::get(url).await {
        Ok(r) => {
            let status = r.status().as_u16();
            Ok((status, r.text().await.unwrap_or_default()))
        }
        Err(_) => Ok((0, String::new())),
    }
}

async fn wait_ready(
    api: &Api<ArtifactGenerator>,
    name: &str,
    handled: Option<&str>,
) -> Result<ArtifactGenerator> {
    wait(&format!("generator {name} Ready"), || async {
        let g = api.get(name).await?;
        let status = g.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let handled_ok = handled.is_none() || status.last_handled_reconcile_at.as_deref() == handled;
        Ok((ready && handled_ok).then_some(g))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reconciles_under_generated_rbac_and_survives_restart() -> Result {
    let cp = ControlPlane::shared().await?;
    let mut crds = artgen::crd::crds();
    crds.extend(flux_source_crds()?);
    cp.apply_crds(&crds).await?;
    let admin = cp.client().await?;
    let ns = cp.namespace("binary").await?;
    let token = apply_rbac(&admin, &ns).await?;
    let work = tempfile::tempdir()?;
    let kubeconfig = work.path().join("kubeconfig");
    token_kubeconfig(cp, &token, &kubeconfig)?;
    let storage = work.path().join("data");
    std::fs::create_dir(&storage)?;
    let ports = [free_port()?, free_port()?, free_port()?];

    let server = SourceServer::start()?;
    let sources = Sources::new(admin.clone(), &server, &ns);
    sources.create(SourceKind::GitRepository, "repo").await?;
    let source = sources
        .publish_files(
            SourceKind::GitRepository,
            "repo",
            "main@sha1:5555",
            &[("app.yaml", b"app: 1\n")],
        )
        .await?;
    let generators: Api<ArtifactGenerator> = Api::namespaced(admin.clone(), &ns);
    let generator: Value = yaml_serde::from_str(&format!(
        r#"
apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {{name: app, namespace: {ns}}}
spec:
  sources: [{{alias: git, kind: GitRepository, name: repo}}]
  artifacts:
    - name: app
      copy: [{{from: "@git/app.yaml", to: "@artifact/"}}]
"#
    ))?;
    generators
        .patch("app", &PatchParams::apply("e2e"), &Patch::Apply(&generator))
        .await?;

    let sink = EventSink::start()?;
    let events_addr = format!("http://{}/", sink.addr);
    let running = Running::start(&kubeconfig, &ns, &storage, ports, &events_addr)?;
    let health = format!("http://127.0.0.1:{}", ports[2]);
    wait("/readyz 200", || async {
        let (code, _) = http_get(&format!("{health}/readyz")).await?;
        Ok((code == 200).then_some(()))
    })
    .await?;
    assert_eq!(http_get(&format!("{health}/healthz")).await?.0, 200);
    wait_ready(&generators, "app", None).await?;

    let eas: Api<ExternalArtifact> = Api::namespaced(admin.clone(), &ns);
    let ea = eas.get("app").await?;
    let artifact = ea
        .status
        .as_ref()
        .and_then(|s| s.artifact.clone())
        .ok_or("no artifact")?;
    assert!(artifact.url.starts_with(&format!(
        "http://127.0.0.1:{}/externalartifact/{ns}/app/",
        ports[0]
    )));
    let bytes = reqwest::get(&artifact.url)
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    assert_eq!(Some(artgen_e2e::fixtures::sha256_digest(&bytes)), artifact.digest);

    // Leader election held a Lease in the runtime namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("source-watcher-leader-election")
        .await?;
    assert!(
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .is_some_and(|h| !h.is_empty())
    );
    // Metrics: Flux's gauges and our cache counter.
    let (code, metrics) = http_get(&format!("http://127.0.0.1:{}/metrics", ports[1])).await?;
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!(
            "gotk_reconcile_condition{{kind=\"ArtifactGenerator\",name=\"app\",namespace=\"{ns}\",type=\"Ready\",status=\"True\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("artgen_source_cache_requests_total{result=\"miss\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gotk_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("artgen_build_stage_duration_seconds_count{stage=\"pack\"}"),
        "{metrics}"
    );
    // Logs are JSON lines.
    let line = running.logs.recv_timeout(WAIT)?;
    let parsed: Value =
        serde_json::from_str(&line).map_err(|e| format!("log line is not JSON ({e}): {line}"))?;
    assert!(
        parsed.get("level").is_some() && parsed.get("timestamp").is_some(),
        "{line}"
    );

    // Normal and Warning events reach notification-controller; trace events do not.
    let forwarded = wait("a forwarded Ready event", || async {
        let bodies = sink.bodies.lock().unwrap().clone();
        Ok(bodies.into_iter().find(|b| {
            b["reason"] == "Ready"
                && b["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("external artifacts reconciled"))
        }))
    })
    .await?;
    assert_eq!(forwarded["severity"], "info");
    assert_eq!(forwarded["involvedObject"]["kind"], "ArtifactGenerator");
    assert_eq!(forwarded["involvedObject"]["name"], "app");
    assert_eq!(forwarded["reportingController"], "source-watcher");
    let traces = sink
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| {
            b["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reconciliation succeeded") || m.starts_with("No drift"))
        })
        .count();
    assert_eq!(traces, 0, "trace events are not forwarded");

    // Restart: same URL and digest, storage re-verified, no second download.
    running.stop()?;
    let released = Api::<Lease>::namespaced(admin.clone(), &ns)
        .get("source-watcher-leader-election")
        .await?;
    assert!(
        released.spec.and_then(|s| s.holder_identity).is_none(),
        "lease released on shutdown"
    );
    let running = Running::start(&kubeconfig, &ns, &storage, ports, &events_addr)?;
    let patch =
        serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "restart"}}});
    generators
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_ready(&generators, "app", Some("restart")).await?;
    let again = reqwest::get(&artifact.url)
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    assert_eq!(again, bytes, "same URL serves the same bytes after a restart");
    assert_eq!(
        sources.downloads(&source),
        1,
        "an unchanged source digest is never downloaded again"
    );
    let ea2 = eas.get("app").await?;
    assert_eq!(
        ea2.status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .map(|a| a.url.clone()),
        Some(artifact.url.clone())
    );
    assert_eq!(ea2.resource_version(), ea.resource_version(), "nothing rewritten");
    running.stop()?;
    Ok(())
}
