//! Controller benchmark on the real control plane (issue 4; not run by CI):
//!
//!     cargo bench -p artgen --bench controller
//!
//! 200 generators × 2 artifacts over 4 shared GitRepositories, reconciled by the release `artgen controller`
//! binary with upstream's default flags. Reports: initial convergence, the time from a revision change of every
//! source to all 400 ExternalArtifacts carrying it, reconciles per second, the mean cost of a reconcile whose
//! sources and spec did not change (from the controller's own `gotk_reconcile_duration_seconds`: passes
//! with nothing to write, enqueued by a label on an ExternalArtifact; passes that write
//! `lastHandledReconcileAt` for a `requestedAt` on every generator at the same time, then one at a time),
//! the controller's API requests (`rest_client_requests_total`) and its peak RSS. The change is made
//! once the controller has been idle long enough for its rate limiter to refill. Environment: `ARTGEN_BENCH_GENERATORS` (200), `ARTGEN_BENCH_ARGS` (extra flags,
//! e.g. `--kube-api-qps=500 --kube-api-burst=1000`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artgen::crd::{ArtifactGenerator, ExternalArtifact};
use artgen_e2e::control_plane::{ControlPlane, flux_source_crds};
use artgen_e2e::fixtures::{SourceKind, Sources};
use artgen_e2e::source_server::SourceServer;
use artgen_e2e::wait;
use kube::api::{Api, ListParams, Patch, PatchParams};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SOURCES: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(600);
const CONTROLLER_CLIENT: &str = "client=\"controller\"";
/// Long enough for the default rate limiter (burst 300 at 50/s) to refill.
const QUIET: Duration = Duration::from_secs(6);

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

/// Waits until `done` holds for the listed ExternalArtifacts; returns the time since `started`.
async fn until_artifacts(
    api: &Api<ExternalArtifact>,
    started: Instant,
    done: impl Fn(&[ExternalArtifact]) -> bool,
) -> Result<Duration> {
    let done = &done;
    wait::until("the ExternalArtifacts", TIMEOUT, || async move {
        let items = api.list(&ListParams::default()).await?.items;
        Ok(done(&items).then(|| started.elapsed()))
    })
    .await
}

/// Waits until all `n` generators satisfy `pred`.
async fn until_generators(
    api: &Api<ArtifactGenerator>,
    n: usize,
    what: &str,
    pred: impl Fn(&ArtifactGenerator) -> bool,
) -> Result {
    let pred = &pred;
    wait::until(what, TIMEOUT, || async move {
        let items = api.list(&ListParams::default()).await?.items;
        Ok((items.iter().filter(|g| pred(g)).count() == n).then_some(()))
    })
    .await
}

/// One scrape of the controller's `/metrics`: `(series, value)` per sample line.
struct Scrape(Vec<(String, f64)>);

impl Scrape {
    async fn take(metrics_url: &str) -> Result<Self> {
        let text = reqwest::get(metrics_url).await?.text().await?;
        Ok(Scrape(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        ))
    }

    /// Sums of the samples of metric `name` whose labels contain `filter`, keyed by the value of `label`
    /// ("" for all).
    fn by(&self, name: &str, filter: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (series, value) in &self.0 {
            let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
            if metric != name || !labels.contains(filter) {
                continue;
            }
            let key = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{label}=\"")))
                .map(|v| v.trim_end_matches(['}', '"']).to_owned())
                .unwrap_or_default();
            *out.entry(key).or_default() += value;
        }
        out
    }

    fn total(&self, name: &str) -> f64 {
        self.by(name, "", "").values().sum()
    }

    /// The controller client's API requests (events have their own client) by method.
    fn requests(&self) -> BTreeMap<String, f64> {
        self.by("rest_client_requests_total", CONTROLLER_CLIENT, "method")
    }

    /// Sum and count of `gotk_reconcile_duration_seconds` over all generators.
    fn reconciles(&self) -> (f64, f64) {
        (
            self.total("gotk_reconcile_duration_seconds_sum"),
            self.total("gotk_reconcile_duration_seconds_count"),
        )
    }
}

/// Waits until the controller has sent no API request for [`QUIET`] (its rate limiter is full again).
async fn until_quiet(metrics_url: &str) -> Result {
    let started = Instant::now();
    let mut last = (Scrape::take(metrics_url).await?.requests(), Instant::now());
    while last.1.elapsed() < QUIET {
        if started.elapsed() > TIMEOUT {
            return Err("the controller never went quiet".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Scrape::take(metrics_url).await?.requests();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    Ok(())
}

/// `after - before` per key, the zero differences left out.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> String {
    after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(k, d)| format!("{k} {d:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    until_generators(&generators, n, "every generator Ready", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await?;
    // A source change usually meets an idle controller, with a full rate limiter.
    until_quiet(&metrics_url).await?;
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
    let scrape0 = Scrape::take(&metrics_url).await?;
    let (sum0, count0) = scrape0.reconciles();
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
    let scrape1 = Scrape::take(&metrics_url).await?;
    let (sum1, count1) = scrape1.reconciles();
    let api_requests = delta(&scrape0.requests(), &scrape1.requests());
    let limiter = |s: &Scrape| {
        s.by(
            "rest_client_rate_limiter_duration_seconds_sum",
            CONTROLLER_CLIENT,
            "",
        )
        .values()
        .sum::<f64>()
    };
    let limiter_wait = limiter(&scrape1) - limiter(&scrape0);

    until_quiet(&metrics_url).await?;
    // Write-free no-op passes: a label no drift check looks at, on one ExternalArtifact per generator,
    // enqueues the generator (spec §9.1); the pass finds nothing to do.
    let scrape_a = Scrape::take(&metrics_url).await?;
    for i in 0..n {
        let patch = serde_json::json!({"metadata": {"labels": {"bench/touched": "1"}}});
        eas.patch(
            &format!("gen-{i}-a"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    let counted = scrape_a.reconciles().1 + n as f64;
    let metrics = metrics_url.as_str();
    let scrape_b = wait::until("a pass per touched generator", TIMEOUT, || async move {
        let s = Scrape::take(metrics).await?;
        Ok((s.reconciles().1 >= counted).then_some(s))
    })
    .await?;
    let (sum_a, count_a) = scrape_a.reconciles();
    let (sum_b, count_b) = scrape_b.reconciles();
    let quiet_mean_ms = (sum_b - sum_a) / (count_b - count_a).max(1.0) * 1000.0;
    let quiet_requests = delta(&scrape_a.requests(), &scrape_b.requests());
    let reconciles = count1 - count0;

    // No-op passes: a requestedAt on every generator (not drift), then the controller's own timing.
    let (sum2, count2) = scrape_b.reconciles();
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
    until_generators(&generators, n, "every requestedAt handled", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("noop")
    })
    .await?;
    let (sum3, count3) = Scrape::take(&metrics_url).await?.reconciles();
    let noop_mean_ms = if count3 > count2 {
        (sum3 - sum2) / (count3 - count2) * 1000.0
    } else {
        f64::NAN
    };
    // The same, one generator at a time: each pass's own cost (the status write included), without the
    // queueing behind the API rate limiter that 400 simultaneous requests cause.
    let sequential = n.min(50);
    let (sum4, count4) = Scrape::take(&metrics_url).await?.reconciles();
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
    let (sum5, count5) = Scrape::take(&metrics_url).await?.reconciles();
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
    println!("  controller API requests during the change:     {api_requests}");
    println!("  waited for the client-side rate limiter:       {limiter_wait:>8.1} s summed over requests");
    println!(
        "  no-op reconcile, nothing to write, mean:       {:>8.2} ms  over {:.0} passes (target < 5 ms); API requests: {}",
        quiet_mean_ms,
        count_b - count_a,
        if quiet_requests.is_empty() {
            "none"
        } else {
            &quiet_requests
        }
    );
    println!(
        "  requestedAt pass (one status write), mean:     {:>8.2} ms  over {:.0} passes, all at once",
        noop_mean_ms,
        count3 - count2
    );
    println!(
        "  requestedAt pass, one at a time, mean:         {:>8.2} ms  over {:.0} passes",
        sequential_mean_ms,
        count5 - count4
    );
    println!(
        "  controller peak RSS:                           {:>8.1} MiB (target < 100 MiB)",
        rss as f64 / 1024.0
    );
    Ok(())
}
