//! Controller benchmark on the real control plane (issue 4; not run by CI):
//!
//!     cargo bench -p artgen --bench controller
//!
//! 200 generators × 2 artifacts over 4 shared GitRepositories, reconciled by the release `artgen controller`
//! binary with upstream's default flags. Reports: initial convergence, the time from a revision change of every
//! source to all 400 ExternalArtifacts carrying it, reconciles per second, the mean cost of a reconcile whose
//! sources and spec did not change (from the controller's own `gotk_reconcile_duration_seconds`; once with a
//! `requestedAt` on every generator at the same time, once one generator at a time), and the
//! controller's peak RSS. Environment: `ARTGEN_BENCH_GENERATORS` (200), `ARTGEN_BENCH_ARGS` (extra flags,
//! e.g. `--kube-api-qps=500 --kube-api-burst=1000`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artgen::crd::{ArtifactGenerator, ExternalArtifact};
use artgen_e2e::control_plane::{ControlPlane, flux_source_crds};
use artgen_e2e::fixtures::{SourceKind, Sources};
use artgen_e2e::source_server::SourceServer;
use kube::api::{Api, ListParams, Patch, PatchParams};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SOURCES: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(600);

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn files(round: usize) -> Vec<(String, Vec<u8>)> {
    (0..20)
        .map(|i| {
            (
                format!("deploy/app-{i}.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{i}\ndata:\n  round: \"{round}\"\n")
                    .into_bytes(),
            )
        })
        .collect()
}

async fn publish_all(sources: &Sources<'_>, round: usize) -> Result {
    let files = files(round);
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    for s in 0..SOURCES {
        let revision = format!("main@sha1:{round:04}{s:036}");
        sources
            .publish_files(SourceKind::GitRepository, &format!("src-{s}"), &revision, &refs)
            .await?;
    }
    Ok(())
}

/// Polls (every 100 ms) until `done` holds for the listed ExternalArtifacts; returns the elapsed time.
async fn until_artifacts(
    api: &Api<ExternalArtifact>,
    started: Instant,
    done: impl Fn(&[ExternalArtifact]) -> bool,
) -> Result<Duration> {
    loop {
        let items = api.list(&ListParams::default()).await?.items;
        if done(&items) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > TIMEOUT {
            return Err("timed out".into());
        }
        // A poll interval bounded by TIMEOUT; the measured resolution is 100 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum and count of `gotk_reconcile_duration_seconds` over all generators.
async fn reconcile_totals(metrics_url: &str) -> Result<(f64, f64)> {
    let text = reqwest::get(metrics_url).await?.text().await?;
    let (mut sum, mut count) = (0.0, 0.0);
    for line in text.lines() {
        let value = |l: &str| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if line.starts_with("gotk_reconcile_duration_seconds_sum") {
            sum += value(line);
        } else if line.starts_with("gotk_reconcile_duration_seconds_count") {
            count += value(line);
        }
    }
    Ok((sum, count))
}

fn peak_rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result {
    let n: usize = std::env::var("ARTGEN_BENCH_GENERATORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cp = ControlPlane::shared().await?;
    let mut crds = artgen::crd::crds();
    crds.extend(flux_source_crds()?);
    cp.apply_crds(&crds).await?;
    let client = cp.client().await?;
    let ns = cp.namespace("bench").await?;
    let server = SourceServer::start()?;
    let sources = Sources::new(client.clone(), &server, &ns);
    for s in 0..SOURCES {
        sources
            .create(SourceKind::GitRepository, &format!("src-{s}"))
            .await?;
    }
    publish_all(&sources, 1).await?;
    let generators: Api<ArtifactGenerator> = Api::namespaced(client.clone(), &ns);
    for i in 0..n {
        let (a, b) = (i % SOURCES, (i + 1) % SOURCES);
        let manifest: serde_json::Value = yaml_serde::from_str(&format!(
            r#"
apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {{name: gen-{i}, namespace: {ns}}}
spec:
  sources:
    - {{alias: a, kind: GitRepository, name: src-{a}}}
    - {{alias: b, kind: GitRepository, name: src-{b}}}
  artifacts:
    - name: gen-{i}-a
      copy: [{{from: "@a/deploy/**", to: "@artifact/"}}]
    - name: gen-{i}-b
      revision: "@b"
      copy: [{{from: "@b/deploy/*.yaml", to: "@artifact/b/"}}]
"#
        ))?;
        generators
            .patch(
                &format!("gen-{i}"),
                &PatchParams::apply("bench"),
                &Patch::Apply(&manifest),
            )
            .await?;
    }

    let work = tempfile::tempdir()?;
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cp.kubeconfig())?;
    let storage = work.path().join("data");
    std::fs::create_dir(&storage)?;
    let metrics_port = free_port()?;
    let extra = std::env::var("ARTGEN_BENCH_ARGS").unwrap_or_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_artgen"))
        .args([
            "controller".to_owned(),
            "--watch-all-namespaces=false".to_owned(),
            format!("--storage-path={}", storage.display()),
            format!("--storage-addr=127.0.0.1:{}", free_port()?),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            format!("--health-addr=127.0.0.1:{}", free_port()?),
            "--log-level=error".to_owned(),
        ])
        .args(extra.split_whitespace())
        .env("KUBECONFIG", &kubeconfig)
        .env("RUNTIME_NAMESPACE", &ns)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let eas: Api<ExternalArtifact> = Api::namespaced(client.clone(), &ns);

    let started = Instant::now();
    let initial = until_artifacts(&eas, started, |items| {
        items
            .iter()
            .filter(|e| e.status.as_ref().is_some_and(|s| s.artifact.is_some()))
            .count()
            == 2 * n
    })
    .await?;

    // Settle: wait until every generator is Ready, then measure the change.
    loop {
        let ready = generators
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|g| {
                g.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let digest_of = |e: &ExternalArtifact| {
        e.status
            .as_ref()
            .and_then(|s| s.artifact.as_ref()?.digest.clone())
    };
    let before: BTreeMap<String, Option<String>> = eas
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|e| (e.metadata.name.clone().unwrap_or_default(), digest_of(e)))
        .collect();
    let (sum0, count0) = reconcile_totals(&metrics_url).await?;
    let started = Instant::now();
    publish_all(&sources, 2).await?;
    // Every artifact's content changes with round 2, so every digest must move.
    let changed = until_artifacts(&eas, started, |items| {
        let updated = items
            .iter()
            .filter(|e| {
                let name = e.metadata.name.clone().unwrap_or_default();
                digest_of(e).is_some() && before.get(&name).is_some_and(|d| *d != digest_of(e))
            })
            .count();
        updated == 2 * n
    })
    .await?;
    let (sum1, count1) = reconcile_totals(&metrics_url).await?;
    let reconciles = count1 - count0;

    // No-op passes: a requestedAt on every generator (not drift), then the controller's own timing.
    let (sum2, count2) = (sum1, count1);
    for i in 0..n {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "noop"}}});
        generators
            .patch(
                &format!("gen-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let noop_started = Instant::now();
    loop {
        let handled = generators
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|g| {
                g.status
                    .as_ref()
                    .and_then(|s| s.last_handled_reconcile_at.as_deref())
                    == Some("noop")
            })
            .count();
        if handled == n || noop_started.elapsed() > TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sum3, count3) = reconcile_totals(&metrics_url).await?;
    let noop_mean_ms = if count3 > count2 {
        (sum3 - sum2) / (count3 - count2) * 1000.0
    } else {
        f64::NAN
    };
    // The same, one generator at a time: each pass's own cost (the status write included), without the
    // queueing behind the API rate limiter that 400 simultaneous requests cause.
    let sequential = n.min(50);
    let (sum4, count4) = reconcile_totals(&metrics_url).await?;
    for i in 0..sequential {
        let (name, value) = (format!("gen-{i}"), format!("seq-{i}"));
        let patch =
            serde_json::json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}});
        generators
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let handled = move |g: Option<&ArtifactGenerator>| {
            g.and_then(|g| g.status.as_ref())
                .and_then(|s| s.last_handled_reconcile_at.as_deref())
                == Some(value.as_str())
        };
        tokio::time::timeout(
            TIMEOUT,
            kube::runtime::wait::await_condition(generators.clone(), &name, handled),
        )
        .await??;
    }
    let (sum5, count5) = reconcile_totals(&metrics_url).await?;
    let sequential_mean_ms = (sum5 - sum4) / (count5 - count4).max(1.0) * 1000.0;
    let rss = peak_rss_kib(&child);
    let _ = child.kill();
    let _ = child.wait();

    println!("artgen controller benchmark: {n} generators × 2 artifacts over {SOURCES} shared sources");
    println!(
        "  initial build, all {} ExternalArtifacts ready: {:>8.2} s",
        2 * n,
        initial.as_secs_f64()
    );
    println!(
        "  source revision change → all {} updated:     {:>8.2} s   (target ≤ 10 s; anchor: ~60 s with source-watcher, cozystack#3163)",
        2 * n,
        changed.as_secs_f64()
    );
    println!(
        "  reconciles during the change:                  {:>8.0}     ({:.0}/s, mean {:.1} ms)",
        reconciles,
        reconciles / changed.as_secs_f64(),
        (sum1 - sum0) / reconciles.max(1.0) * 1000.0
    );
    println!(
        "  no-op reconcile (requestedAt only), mean:      {:>8.2} ms  over {:.0} passes (target < 5 ms)",
        noop_mean_ms,
        count3 - count2
    );
    println!(
        "  no-op reconcile, one at a time, mean:          {:>8.2} ms  over {:.0} passes (target < 5 ms)",
        sequential_mean_ms,
        count5 - count4
    );
    println!(
        "  controller peak RSS:                           {:>8.1} MiB (target < 100 MiB)",
        rss as f64 / 1024.0
    );
    Ok(())
}
