//! The issue-2 benchmark: artgen's engine against `tar | gzip -6`, `tar | pigz -p2` and `curl | tar -xz` on
//! the same synthetic monorepo, all in one run. Not run by CI.
//!
//! Command (from the workspace root; builds the bench profile of the engine and the `artgen` binary):
//!
//! ```text
//! cargo bench -p artgen --bench build
//! ```
//!
//! Options, all environment variables (command-line arguments are ignored):
//! - `ARTGEN_BENCH_RUNS=N` (default 5): timed runs per contender, after one untimed warm-up round; min and
//!   median are printed.
//! - `ARTGEN_BENCH_VARIANTS=a,b` (default `a,b`): `a` = ~5,000 YAML files, ~50 MB, under
//!   `apps/<app>/<env>/<component>/`; `b` = `a` plus three large files (YAML, JSON, binary), ~200 MB.
//! - `ARTGEN_BENCH_ONLY=compose,decompose,fetch,memory` (default all four).
//! - `ARTGEN_BENCH_SHM=0`: skip the repetition of the fetch measurement on tmpfs (`/dev/shm`).
//! - `ARTGEN_BENCH_DATA=DIR` (default `<target>/bench-data`): generated trees are cached here between runs
//!   (regenerated only when [`GEN_VERSION`] changes); every archive and extracted tree of the run is
//!   written under `DIR/work` (same file system for ours and the baselines), removed at the end.
//!
//! Needs `tar`, `gzip`, `pigz`, `curl` and GNU time at `/usr/bin/time`:
//! `apt-get update && apt-get install -y pigz curl time`.
//!
//! What is timed:
//! - compose: `artgen_engine::build` of a generator copying `@repo/**` to `@artifact/` from a directory
//!   source (`BuildOptions.pack.threads` = 1 and 2), plus `BuildOutput::write_to` (a rename); baseline
//!   `tar -cf - -C TREE . | gzip -6 > FILE` and the same with `pigz -6 -p2`.
//! - decompose: a `pathPattern: "@repo/apps/{app}"` generator, 5 artifacts, 2 threads; baselines: the same
//!   pipelines over the 5 `apps/<app>` subtrees, one after the other.
//! - fetch+verify+extract: the `tar | gzip -6` tarball of the tree served by `SourceServer` on loopback;
//!   `artgen_engine::fetch::fetch` with the sha256 pin vs `curl -s URL | tar -xzf - -C DIR`. Removing the
//!   extracted tree is not timed.
//! - peak memory: max RSS (`/usr/bin/time -f %M`) of the real `artgen build` composing the tree from a
//!   directory source and from a URL source (fetch + compose).
//!
//! Contenders run interleaved, round by round, rotating which goes first, each run after an untimed
//! `sync -f`, so load from other processes on the machine hits all of them alike; trees discarded on the
//! target file system are deleted only at the end (see `Trash`). The final table compares wall-time
//! medians; a second table shows the CPU time (user + system, this process and its children) of the same
//! comparisons, and every measurement prints the load average, to tell a slow run from a busy machine.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use artgen_e2e::archive::sha256_hex;
use artgen_e2e::source_server::SourceServer;
use artgen_engine::fetch::{self, ExtractMode, HttpOptions, Limits};
use artgen_engine::spec::{Manifest, parse_manifest};
use artgen_engine::{BuildInput, BuildOptions, SourceInput};

const BIN: &str = env!("CARGO_BIN_EXE_artgen");

/// Bump when the generated trees change: cached trees of another version are regenerated.
const GEN_VERSION: u32 = 1;

const APPS: [&str; 5] = ["billing", "catalog", "checkout", "identity", "search"];
const ENVS: [&str; 4] = ["base", "dev", "staging", "prod"];
const COMPONENTS_PER_ENV: usize = 25;
const FILE_KINDS: [&str; 10] = [
    "deployment",
    "service",
    "configmap",
    "hpa",
    "ingress",
    "networkpolicy",
    "serviceaccount",
    "pdb",
    "servicemonitor",
    "values",
];

const COMPOSE_YAML: &str = r#"apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata:
  name: bench-compose
  namespace: bench
spec:
  sources:
    - alias: repo
      kind: GitRepository
      name: monorepo
  artifacts:
    - name: all
      copy:
        - from: "@repo/**"
          to: "@artifact/"
"#;

const DECOMPOSE_YAML: &str = r#"apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata:
  name: bench-decompose
  namespace: bench
spec:
  sources:
    - alias: repo
      kind: GitRepository
      name: monorepo
  pathPattern: "@repo/apps/{app}"
  artifacts:
    - name: "app-{app}"
      copy:
        - from: "@repo/apps/{app}/**"
          to: "@artifact/"
"#;

// ---------------------------------------------------------------------------------------------------------
// Configuration

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    A,
    B,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::A => "a",
            Variant::B => "b",
        }
    }
}

struct Config {
    runs: usize,
    variants: Vec<Variant>,
    only: BTreeSet<String>,
    shm: bool,
    data: PathBuf,
}

impl Config {
    fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let runs = match var("ARTGEN_BENCH_RUNS") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .with_context(|| format!("ARTGEN_BENCH_RUNS={v}: expected a positive integer"))?,
            None => 5,
        };
        let mut variants = Vec::new();
        for v in var("ARTGEN_BENCH_VARIANTS")
            .as_deref()
            .unwrap_or("a,b")
            .split(',')
        {
            let v = match v.trim().to_ascii_lowercase().as_str() {
                "a" => Variant::A,
                "b" => Variant::B,
                other => bail!("ARTGEN_BENCH_VARIANTS: unknown variant '{other}' (expected a, b)"),
            };
            if !variants.contains(&v) {
                variants.push(v);
            }
        }
        const PARTS: [&str; 4] = ["compose", "decompose", "fetch", "memory"];
        let only: BTreeSet<String> = match var("ARTGEN_BENCH_ONLY") {
            Some(v) => v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect(),
            None => PARTS.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(bad) = only.iter().find(|p| !PARTS.contains(&p.as_str())) {
            bail!(
                "ARTGEN_BENCH_ONLY: unknown part '{bad}' (expected {})",
                PARTS.join(", ")
            );
        }
        let shm = var("ARTGEN_BENCH_SHM").is_none_or(|v| v != "0");
        let data = match var("ARTGEN_BENCH_DATA") {
            Some(d) => PathBuf::from(d),
            None => target_dir().join("bench-data"),
        };
        Ok(Config {
            runs,
            variants,
            only,
            shm,
            data,
        })
    }

    fn wants(&self, part: &str) -> bool {
        self.only.contains(part)
    }
}

/// Cargo's target directory: the ancestor of this executable holding `CACHEDIR.TAG`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
}

fn check_tools() -> Result<()> {
    for (tool, package) in [
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("pigz", "pigz"),
        ("curl", "curl"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ensure!(
            found,
            "`{tool}` is missing: install it with `apt-get update && apt-get install -y {package}`"
        );
    }
    ensure!(
        Path::new("/usr/bin/time").is_file(),
        "GNU time is missing at /usr/bin/time: install it with `apt-get update && apt-get install -y time`"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Synthetic monorepo (deterministic: every file's content is a function of its path)

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn seeded(key: &str) -> Self {
        // FNV-1a of the key.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }

    fn word(&mut self) -> &'static str {
        self.pick(&WORDS)
    }

    fn hex(&mut self, s: &mut String, digits: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut left = 0;
        let mut bits = 0u64;
        for _ in 0..digits {
            if left == 0 {
                bits = self.next_u64();
                left = 16;
            }
            s.push(HEX[(bits & 15) as usize] as char);
            bits >>= 4;
            left -= 1;
        }
    }
}

#[rustfmt::skip]
const WORDS: [&str; 120] = [
    "account", "admin", "agent", "alert", "api", "archive", "audit", "auth", "backend", "backup", "balance",
    "batch", "billing", "bridge", "broker", "bucket", "cache", "canary", "cart", "catalog", "cert", "channel",
    "checkout", "client", "cluster", "collector", "config", "consumer", "controller", "cron", "customer",
    "dashboard", "data", "database", "debug", "default", "delivery", "discovery", "dispatch", "edge", "email",
    "event", "export", "feature", "feed", "filter", "frontend", "gateway", "graph", "health", "history",
    "identity", "image", "import", "index", "ingest", "inventory", "invoice", "job", "key", "ledger", "limit",
    "listener", "loader", "log", "mailer", "manager", "media", "metrics", "migration", "mirror", "monitor",
    "notify", "order", "partner", "payment", "pipeline", "policy", "pool", "price", "primary", "processor",
    "profile", "proxy", "publisher", "queue", "quota", "rate", "reader", "recommend", "redis", "region",
    "registry", "render", "replica", "report", "request", "resolver", "router", "rule", "scheduler", "search",
    "secret", "session", "shard", "shipping", "signal", "storage", "stream", "sync", "task", "tenant",
    "token", "tracker", "upload", "user", "vault", "webhook", "worker", "writer",
];

const COMPONENT_SUFFIXES: [&str; 8] = [
    "api", "worker", "web", "sync", "cron", "gateway", "store", "consumer",
];

struct Ctx<'a> {
    app: &'a str,
    env: &'a str,
    component: &'a str,
}

/// `writeln!` into a String (infallible).
macro_rules! wl {
    ($s:expr, $($arg:tt)*) => {{
        let _ = writeln!($s, $($arg)*);
    }};
}

fn sentence(s: &mut String, rng: &mut Rng) {
    let n = rng.range(6, 16);
    for i in 0..n {
        let w = rng.word();
        if i == 0 {
            let mut chars = w.chars();
            if let Some(c) = chars.next() {
                s.push(c.to_ascii_uppercase());
                s.push_str(chars.as_str());
            }
        } else {
            s.push(' ');
            s.push_str(w);
        }
    }
    s.push('.');
}

fn value(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>) {
    match rng.range(0, 7) {
        0 => wl!(s, "{}", rng.range(0, 99_999)),
        1 => s.push_str(if rng.chance(50) { "true\n" } else { "false\n" }),
        2 => wl!(s, "{}-{}", rng.word(), rng.word()),
        3 => wl!(
            s,
            "https://{}.{}-{}.svc.cluster.local:{}/{}",
            rng.word(),
            ctx.app,
            ctx.env,
            rng.range(1024, 9999),
            rng.word()
        ),
        4 => {
            let n = rng.range(16, 40) as usize;
            rng.hex(s, n);
            s.push('\n');
        }
        5 => wl!(s, "{}s", rng.range(1, 600)),
        6 => wl!(s, "{}.{}.{}", rng.range(0, 9), rng.range(0, 40), rng.range(0, 99)),
        _ => wl!(s, "{} {} {}", rng.word(), rng.word(), rng.word()),
    }
}

fn labels(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str, indent: usize) {
    let pad = " ".repeat(indent);
    wl!(s, "{pad}app.kubernetes.io/name: {name}");
    wl!(s, "{pad}app.kubernetes.io/instance: {name}-{}", ctx.env);
    wl!(s, "{pad}app.kubernetes.io/part-of: {}", ctx.app);
    wl!(s, "{pad}app.kubernetes.io/managed-by: flux");
    wl!(s, "{pad}environment: {}", ctx.env);
    if rng.chance(50) {
        wl!(s, "{pad}team: {}-{}", rng.word(), rng.word());
    }
}

fn metadata(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("metadata:\n");
    wl!(s, "  name: {name}");
    wl!(s, "  namespace: {}-{}", ctx.app, ctx.env);
    s.push_str("  labels:\n");
    labels(s, rng, ctx, name, 4);
    if rng.chance(60) {
        s.push_str("  annotations:\n");
        s.push_str("    config.example.com/checksum: sha256:");
        rng.hex(s, 64);
        s.push('\n');
        wl!(s, "    owner.example.com/contact: {}@example.com", rng.word());
    }
}

fn deployment(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: apps/v1\nkind: Deployment\n");
    metadata(s, rng, ctx, name);
    s.push_str("spec:\n");
    wl!(s, "  replicas: {}", rng.range(1, 12));
    s.push_str("  revisionHistoryLimit: 5\n  strategy:\n    type: RollingUpdate\n");
    s.push_str("    rollingUpdate:\n      maxSurge: 25%\n      maxUnavailable: 0\n");
    s.push_str("  selector:\n    matchLabels:\n");
    wl!(s, "      app.kubernetes.io/name: {name}");
    s.push_str("  template:\n    metadata:\n      labels:\n");
    labels(s, rng, ctx, name, 8);
    s.push_str("    spec:\n");
    wl!(s, "      serviceAccountName: {name}");
    wl!(
        s,
        "      securityContext:\n        runAsNonRoot: true\n        runAsUser: {}",
        rng.range(1000, 65000)
    );
    s.push_str("      containers:\n");
    for c in 0..rng.range(1, 2) {
        let cname = if c == 0 {
            name.to_owned()
        } else {
            format!("{}-sidecar", rng.word())
        };
        let port = rng.range(1024, 9999);
        wl!(s, "        - name: {cname}");
        let _ = write!(
            s,
            "          image: registry.example.com/{}/{cname}:{}.{}.{}@sha256:",
            ctx.app,
            rng.range(0, 9),
            rng.range(0, 40),
            rng.range(0, 99)
        );
        rng.hex(s, 64);
        s.push('\n');
        s.push_str("          imagePullPolicy: IfNotPresent\n          args:\n");
        wl!(s, "            - --listen=:{port}");
        wl!(
            s,
            "            - --log-level={}",
            rng.pick(&["debug", "info", "warn", "error"])
        );
        for _ in 0..rng.range(1, 5) {
            let _ = write!(s, "            - --{}-{}=", rng.word(), rng.word());
            value(s, rng, ctx);
        }
        wl!(
            s,
            "          ports:\n            - name: http\n              containerPort: {port}\n              protocol: TCP"
        );
        s.push_str("          env:\n");
        for _ in 0..rng.range(4, 20) {
            let (a, b) = (rng.word().to_ascii_uppercase(), rng.word().to_ascii_uppercase());
            if rng.chance(20) {
                wl!(
                    s,
                    "            - name: {a}_{b}_SECRET\n              valueFrom:\n                secretKeyRef:"
                );
                wl!(
                    s,
                    "                  name: {name}-secrets\n                  key: {}-{}",
                    rng.word(),
                    rng.word()
                );
            } else {
                wl!(s, "            - name: {a}_{b}");
                s.push_str("              value: \"");
                value(s, rng, ctx);
                s.pop();
                s.push_str("\"\n");
            }
        }
        let mem = rng.range(64, 4096);
        wl!(
            s,
            "          resources:\n            requests:\n              cpu: {}m\n              memory: {mem}Mi",
            rng.range(50, 2000)
        );
        wl!(s, "            limits:\n              memory: {}Mi", mem * 2);
        wl!(
            s,
            "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: http\n            periodSeconds: {}",
            rng.range(5, 30)
        );
    }
}

fn service(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: v1\nkind: Service\n");
    metadata(s, rng, ctx, name);
    s.push_str("spec:\n  type: ClusterIP\n  selector:\n");
    wl!(s, "    app.kubernetes.io/name: {name}");
    s.push_str("  ports:\n");
    for _ in 0..rng.range(1, 3) {
        let port = rng.range(80, 9999);
        wl!(
            s,
            "    - name: {}\n      port: {port}\n      targetPort: {}",
            rng.word(),
            port + 1
        );
    }
}

fn configmap(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: v1\nkind: ConfigMap\n");
    metadata(s, rng, ctx, &format!("{name}-config"));
    s.push_str("data:\n");
    for _ in 0..rng.range(2, 6) {
        wl!(s, "  {}.conf: |", rng.word());
        for _ in 0..rng.range(5, 40) {
            if rng.chance(15) {
                s.push_str("    # ");
                sentence(s, rng);
                s.push('\n');
            } else {
                let _ = write!(s, "    {}.{}.{} = ", rng.word(), rng.word(), rng.word());
                value(s, rng, ctx);
            }
        }
    }
}

fn hpa(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\n");
    metadata(s, rng, ctx, name);
    wl!(
        s,
        "spec:\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {name}\n  minReplicas: {}\n  maxReplicas: {}",
        rng.range(1, 3),
        rng.range(4, 40)
    );
    wl!(
        s,
        "  metrics:\n    - type: Resource\n      resource:\n        name: cpu\n        target:\n          type: Utilization\n          averageUtilization: {}",
        rng.range(40, 90)
    );
}

fn ingress(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: networking.k8s.io/v1\nkind: Ingress\n");
    metadata(s, rng, ctx, name);
    s.push_str("spec:\n  ingressClassName: nginx\n  rules:\n");
    wl!(
        s,
        "    - host: {name}.{}.{}.example.com\n      http:\n        paths:",
        ctx.env,
        ctx.app
    );
    for _ in 0..rng.range(1, 6) {
        wl!(
            s,
            "          - path: /{}/{}\n            pathType: Prefix\n            backend:\n              service:\n                name: {name}\n                port:\n                  number: {}",
            rng.word(),
            rng.word(),
            rng.range(80, 9999)
        );
    }
}

fn networkpolicy(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str) {
    s.push_str("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n");
    metadata(s, rng, ctx, name);
    wl!(
        s,
        "spec:\n  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n  ingress:"
    );
    for _ in 0..rng.range(1, 5) {
        wl!(
            s,
            "    - from:\n        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: {}-{}\n      ports:\n        - port: {}",
            rng.word(),
            ctx.env,
            rng.range(80, 9999)
        );
    }
}

fn small(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, name: &str, kind: &str) {
    match kind {
        "serviceaccount" => {
            s.push_str("apiVersion: v1\nkind: ServiceAccount\n");
            metadata(s, rng, ctx, name);
        }
        "pdb" => {
            s.push_str("apiVersion: policy/v1\nkind: PodDisruptionBudget\n");
            metadata(s, rng, ctx, name);
            wl!(
                s,
                "spec:\n  maxUnavailable: {}\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}",
                rng.range(1, 3)
            );
        }
        _ => {
            s.push_str("apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n");
            metadata(s, rng, ctx, name);
            wl!(
                s,
                "spec:\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: {name}\n  endpoints:\n    - port: http\n      interval: {}s\n      path: /metrics",
                rng.range(10, 60)
            );
        }
    }
}

/// Helm-style values: nested sections until `target` bytes.
fn values_file(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, target: usize) {
    wl!(s, "# Values for {} in {}.", ctx.component, ctx.env);
    while s.len() < target {
        wl!(s, "{}{}:", rng.word(), rng.range(0, 99));
        for _ in 0..rng.range(2, 8) {
            wl!(s, "  {}:", rng.word());
            for _ in 0..rng.range(2, 10) {
                let _ = write!(
                    s,
                    "    {}{}: ",
                    rng.word(),
                    rng.pick(&["", "Enabled", "Name", "Timeout", "Url"])
                );
                value(s, rng, ctx);
            }
        }
    }
}

fn doc(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, kind: &str, name: &str) {
    match kind {
        "deployment" => deployment(s, rng, ctx, name),
        "service" => service(s, rng, ctx, name),
        "configmap" => configmap(s, rng, ctx, name),
        "hpa" => hpa(s, rng, ctx, name),
        "ingress" => ingress(s, rng, ctx, name),
        "networkpolicy" => networkpolicy(s, rng, ctx, name),
        other => small(s, rng, ctx, name, other),
    }
}

/// One manifest file: a document of its kind, then more documents (mostly of the same kind) until at
/// least `target` bytes.
fn yaml_file(s: &mut String, rng: &mut Rng, ctx: &Ctx<'_>, kind: &str, target: usize) {
    if kind == "values" {
        values_file(s, rng, ctx, target);
        return;
    }
    doc(s, rng, ctx, kind, ctx.component);
    while s.len() < target {
        s.push_str("---\n");
        let k = if rng.chance(60) {
            kind
        } else {
            rng.pick(&FILE_KINDS[..9])
        };
        let name = format!("{}-{}", ctx.component, rng.word());
        doc(s, rng, ctx, k, &name);
    }
}

/// A CustomResourceDefinition with a nested, described schema (CRD bundles are the big YAML files of
/// real repositories).
fn crd(s: &mut String, rng: &mut Rng) {
    let (kind, group) = (rng.word(), rng.word());
    wl!(
        s,
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:"
    );
    wl!(
        s,
        "  name: {kind}s.{group}.example.com\nspec:\n  group: {group}.example.com\n  names:"
    );
    wl!(
        s,
        "    kind: {kind}\n    plural: {kind}s\n  scope: Namespaced\n  versions:"
    );
    wl!(
        s,
        "    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:"
    );
    s.push_str("          type: object\n          properties:\n");
    schema_props(s, rng, 12, 0);
}

fn schema_props(s: &mut String, rng: &mut Rng, indent: usize, depth: u32) {
    let pad = " ".repeat(indent);
    for _ in 0..rng.range(3, 12) {
        let _ = writeln!(
            s,
            "{pad}{}{}:",
            rng.word(),
            rng.pick(&["", "Ref", "Spec", "Config", "Status"])
        );
        let _ = write!(s, "{pad}  description: ");
        sentence(s, rng);
        s.push('\n');
        let nested = depth < 3 && rng.chance(35);
        let ty = if nested {
            "object"
        } else {
            rng.pick(&["string", "integer", "boolean", "string"])
        };
        wl!(s, "{pad}  type: {ty}");
        if nested {
            wl!(s, "{pad}  properties:");
            schema_props(s, rng, indent + 4, depth + 1);
        }
    }
}

/// Writes what `chunk` produces to `path` until `total` bytes (streamed, nothing big in memory).
fn write_large(path: &Path, total: usize, mut chunk: impl FnMut(&mut String)) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut written, mut s) = (0, String::new());
    while written < total {
        s.clear();
        chunk(&mut s);
        w.write_all(s.as_bytes())?;
        written += s.len();
    }
    w.flush()?;
    Ok(())
}

fn generate(root: &Path, variant: Variant) -> Result<()> {
    for app in APPS {
        let mut rng = Rng::seeded(&format!("components/{app}"));
        let mut components = BTreeSet::new();
        while components.len() < COMPONENTS_PER_ENV {
            components.insert(format!("{}-{}", rng.word(), rng.pick(&COMPONENT_SUFFIXES)));
        }
        for env in ENVS {
            let env_dir = root.join("apps").join(app).join(env);
            let mut kustomization = format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {app}-{env}\nresources:\n"
            );
            for component in &components {
                let dir = env_dir.join(component);
                fs::create_dir_all(&dir)?;
                let ctx = Ctx { app, env, component };
                for kind in FILE_KINDS {
                    let rel = format!("apps/{app}/{env}/{component}/{kind}.yaml");
                    let mut rng = Rng::seeded(&rel);
                    let target = rng.range(256, 16 * 1024) as usize;
                    let mut s = String::with_capacity(target + 8192);
                    yaml_file(&mut s, &mut rng, &ctx, kind, target);
                    fs::write(dir.join(format!("{kind}.yaml")), s)?;
                    wl!(kustomization, "  - {component}/{kind}.yaml");
                }
            }
            fs::write(env_dir.join("kustomization.yaml"), kustomization)?;
        }
    }
    if variant == Variant::B {
        let crds = root.join("apps").join(APPS[1]).join("base").join("crds");
        fs::create_dir_all(&crds)?;
        let mut rng = Rng::seeded("large/crds");
        write_large(&crds.join("bundle.yaml"), 60_000_000, |s| {
            crd(s, &mut rng);
            s.push_str("---\n");
        })?;

        let snapshots = root.join("apps").join(APPS[3]).join("base").join("snapshots");
        fs::create_dir_all(&snapshots)?;
        let mut rng = Rng::seeded("large/index");
        write_large(&snapshots.join("index.json"), 45_000_000, |s| {
            s.push_str("{\"id\":\"");
            rng.hex(s, 16);
            let _ = writeln!(
                s,
                "\",\"service\":\"{}-{}\",\"path\":\"/api/v{}/{}/{}\",\"status\":{},\"latency_ms\":{},\"ts\":{},\"tags\":[\"{}\",\"{}\"]}}",
                APPS[3],
                rng.word(),
                rng.range(1, 3),
                rng.word(),
                rng.word(),
                rng.pick(&["200", "200", "200", "201", "204", "404", "500"]),
                rng.range(1, 5000),
                1_700_000_000 + rng.range(0, 30_000_000),
                rng.word(),
                rng.word()
            );
        })?;

        let assets = root.join("apps").join(APPS[4]).join("prod").join("assets");
        fs::create_dir_all(&assets)?;
        let mut rng = Rng::seeded("large/model");
        let mut w = BufWriter::with_capacity(1 << 20, File::create(assets.join("model.bin"))?);
        for _ in 0..45_000_000 / 8 {
            w.write_all(&rng.next_u64().to_le_bytes())?;
        }
        w.flush()?;
    }
    Ok(())
}

struct Tree {
    variant: Variant,
    root: PathBuf,
    files: u64,
    bytes: u64,
}

fn count(dir: &Path, files: &mut u64, bytes: &mut u64) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.metadata()?;
        if md.is_dir() {
            count(&entry.path(), files, bytes)?;
        } else {
            *files += 1;
            *bytes += md.len();
        }
    }
    Ok(())
}

/// The cached tree of `variant`, generated first if missing or of another generator version.
fn ensure_tree(data: &Path, variant: Variant) -> Result<Tree> {
    let name = format!("tree-{}-v{GEN_VERSION}", variant.name());
    let root = data.join(&name);
    let stamp = data.join(format!("{name}.done"));
    if !(root.is_dir() && stamp.is_file()) {
        fs::create_dir_all(data)?;
        for entry in fs::read_dir(data)? {
            let entry = entry?;
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("tree-{}-", variant.name())) {
                let p = entry.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p)?
                } else {
                    fs::remove_file(&p)?
                }
            }
        }
        let tmp = data.join(format!("{name}.tmp"));
        let started = Instant::now();
        println!("generating variant {} in {} ...", variant.name(), root.display());
        fs::create_dir_all(&tmp)?;
        generate(&tmp, variant)?;
        fs::rename(&tmp, &root)?;
        fs::write(&stamp, "complete\n")?;
        println!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    }
    let (mut files, mut bytes) = (0, 0);
    count(&root, &mut files, &mut bytes)?;
    Ok(Tree {
        variant,
        root,
        files,
        bytes,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Measurement

#[derive(Clone, Copy, Debug)]
struct Stats {
    min: Duration,
    median: Duration,
    /// Median CPU time (user + system, this process and its children) of a run.
    cpu: Duration,
}

fn median(mut t: Vec<Duration>) -> Duration {
    t.sort();
    let n = t.len();
    if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2
    }
}

fn stats(wall: &[Duration], cpu: &[Duration]) -> Stats {
    Stats {
        min: wall.iter().copied().min().unwrap_or_default(),
        median: median(wall.to_vec()),
        cpu: median(cpu.to_vec()),
    }
}

/// CPU time used so far by this process (all threads) and its waited-for children, from /proc/self/stat
/// (fields 14-17: utime, stime, cutime, cstime, in clock ticks).
fn cpu_time(ticks_per_sec: u64) -> Result<Duration> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    ensure!(fields.len() > 14, "unexpected /proc/self/stat: {stat}");
    let mut ticks = 0u64;
    for f in &fields[11..15] {
        ticks += f
            .parse::<u64>()
            .with_context(|| format!("unexpected /proc/self/stat: {stat}"))?;
    }
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64))
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The 1-minute load average: how busy the machine was (other processes skew wall times).
fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

type Timed<'a> = Box<dyn FnMut() -> Result<Duration> + 'a>;

struct Contender<'a> {
    label: &'static str,
    run: Timed<'a>,
}

fn contender<'a>(label: &'static str, run: impl FnMut() -> Result<Duration> + 'a) -> Contender<'a> {
    Contender {
        label,
        run: Box::new(run),
    }
}

/// One untimed warm-up round, then `runs` rounds; each round runs every contender once, starting with a
/// different one each time, each run after [`settle`]. Prints min/median per contender and returns the
/// stats in input order.
fn measure(
    title: &str,
    runs: usize,
    bytes: u64,
    settle_dir: &Path,
    contenders: &mut [Contender<'_>],
) -> Result<Vec<Stats>> {
    println!("\n{title} ({runs} runs + 1 warm-up; load average {})", load());
    let ticks = clock_ticks();
    let n = contenders.len();
    let mut wall = vec![Vec::with_capacity(runs); n];
    let mut cpu = vec![Vec::with_capacity(runs); n];
    for round in 0..=runs {
        for k in 0..n {
            let i = (round + k) % n;
            let c = &mut contenders[i];
            settle(settle_dir)?;
            let cpu_before = cpu_time(ticks)?;
            let t = (c.run)().with_context(|| format!("{title}: {}", c.label))?;
            let used = cpu_time(ticks)?.saturating_sub(cpu_before);
            if round > 0 {
                wall[i].push(t);
                cpu[i].push(used);
            }
        }
    }
    let out: Vec<Stats> = wall.iter().zip(&cpu).map(|(w, c)| stats(w, c)).collect();
    for (c, s) in contenders.iter().zip(&out) {
        println!(
            "  {:<34} min {:>7.3} s   median {:>7.3} s   ({:>6.1} MB/s)   cpu {:>7.3} s",
            c.label,
            s.min.as_secs_f64(),
            s.median.as_secs_f64(),
            bytes as f64 / 1e6 / s.median.as_secs_f64(),
            s.cpu.as_secs_f64()
        );
    }
    println!("  (load average after: {})", load());
    Ok(out)
}

/// Flushes the file system of `dir` (`sync -f`, untimed) so that the write-back and discards of earlier runs'
/// files do not land in the next timed run, whichever contender that is.
fn settle(dir: &Path) -> Result<()> {
    let status = Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
        .context("running sync")?;
    ensure!(status.success(), "sync -f {} failed: {status}", dir.display());
    Ok(())
}

/// Runs `cmds` as a pipeline (stdout of each into stdin of the next; the last one's stdout into `out`, or
/// discarded) and fails unless every stage succeeds.
fn pipeline(cmds: Vec<Command>, out: Option<&Path>) -> Result<()> {
    let n = cmds.len();
    let mut children = Vec::with_capacity(n);
    let mut prev = None;
    for (i, mut cmd) in cmds.into_iter().enumerate() {
        cmd.stdin(prev.take().map_or_else(Stdio::null, Stdio::from));
        if i + 1 < n {
            cmd.stdout(Stdio::piped());
        } else if let Some(out) = out {
            cmd.stdout(File::create(out).with_context(|| format!("creating {}", out.display()))?);
        } else {
            cmd.stdout(Stdio::null());
        }
        let name = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        prev = child.stdout.take();
        children.push((name, child));
        // `cmd` drops here, closing this process's copies of the pipe ends.
    }
    for (name, mut child) in children {
        let status = child.wait()?;
        ensure!(status.success(), "{name} failed: {status}");
    }
    Ok(())
}

fn tar_create(dir: &Path) -> Command {
    let mut c = Command::new("tar");
    c.arg("-cf").arg("-").arg("-C").arg(dir).arg(".");
    c
}

fn compressor(pigz: bool) -> Command {
    if pigz {
        let mut c = Command::new("pigz");
        c.args(["-6", "-p2"]);
        c
    } else {
        let mut c = Command::new("gzip");
        c.arg("-6");
        c
    }
}

/// `tar -cf - -C dir . | gzip -6 > out` (or pigz -6 -p2), timed.
fn tar_gz(dir: &Path, out: &Path, pigz: bool) -> Result<Duration> {
    let started = Instant::now();
    pipeline(vec![tar_create(dir), compressor(pigz)], Some(out))?;
    Ok(started.elapsed())
}

struct Engine {
    rt: tokio::runtime::Runtime,
    compose: Manifest,
    decompose: Manifest,
}

impl Engine {
    /// Builds `manifest` over `tree` and moves the archives into `out` (both timed; cleanup is not).
    /// Returns the time and the (name, sha256 digest) of every artifact.
    fn build(
        &self,
        manifest: &Manifest,
        tree: &Path,
        threads: usize,
        work: &Path,
        out: &Path,
    ) -> Result<(Duration, Vec<(String, String)>)> {
        let mut options = BuildOptions::default();
        options.pack.threads = threads;
        options.work_dir = Some(work.to_owned());
        let input = BuildInput {
            manifest: manifest.clone(),
            sources: [("repo".to_owned(), SourceInput::Dir(tree.to_owned()))].into(),
            revisions: Default::default(),
            origin_revisions: Default::default(),
            options,
        };
        let started = Instant::now();
        let output = self
            .rt
            .block_on(artgen_engine::build(input))
            .map_err(|e| anyhow::anyhow!(artgen_engine::chain(&e)))?;
        output.write_to(out)?;
        let elapsed = started.elapsed();
        let artifacts = output
            .artifacts
            .iter()
            .map(|a| (a.name.clone(), a.digest.clone()))
            .collect();
        drop(output);
        Ok((elapsed, artifacts))
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    let (mut files, mut bytes) = (0, 0);
    count(dir, &mut files, &mut bytes)?;
    Ok(bytes)
}

const SHM: &str = "/dev/shm";

/// Deferred deletion. When ext4 allocates an inode it skips those freed in the last ~30 s
/// (`recently_deleted`), reading the inode table for each candidate: extracting the 5,000 files of tree A
/// right after deleting a copy of it took 7 s of system time instead of 0.35 s here. Deleting between
/// runs would penalise whichever contender runs next, so discarded trees on the target file system are
/// only moved aside and deleted when the whole run ends; tmpfs has no such effect and is cleaned at once.
struct Trash {
    dir: PathBuf,
    next: Cell<u64>,
}

impl Trash {
    fn new(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Trash {
            dir,
            next: Cell::new(0),
        })
    }

    fn discard(&self, path: &Path) -> Result<()> {
        let Ok(md) = fs::symlink_metadata(path) else {
            return Ok(());
        };
        if path.starts_with(SHM) {
            if md.is_dir() {
                fs::remove_dir_all(path)?;
            } else {
                fs::remove_file(path)?;
            }
            return Ok(());
        }
        let n = self.next.get();
        self.next.set(n + 1);
        fs::rename(path, self.dir.join(n.to_string()))
            .with_context(|| format!("moving {} to the trash", path.display()))
    }

    /// An empty directory at `path`.
    fn fresh_dir(&self, path: &Path) -> Result<()> {
        self.discard(path)?;
        fs::create_dir_all(path)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Results

struct Row {
    metric: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: String,
    ok: String,
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn ratio_row(metric: String, ours: String, baseline: String, ratio: f64, target: Option<f64>) -> Row {
    Row {
        metric,
        ours,
        baseline,
        ratio: format!("{ratio:.3}"),
        target: target.map_or_else(|| "-".to_owned(), |t| format!("<= {t}")),
        ok: target.map_or_else(
            || "-".to_owned(),
            |t| if ratio <= t { "yes" } else { "NO" }.to_owned(),
        ),
    }
}

/// The final tables: the targets (wall-time medians, sizes, memory) and, for information, the CPU time
/// of the same comparisons (less sensitive to other load on the machine, blind to parallelism).
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    cpu: Vec<Row>,
}

impl Report {
    fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    fn time(&mut self, metric: String, ours: Stats, baseline: Stats, target: Option<f64>) {
        let ratio = ours.median.as_secs_f64() / baseline.median.as_secs_f64();
        let cpu_ratio = ours.cpu.as_secs_f64() / baseline.cpu.as_secs_f64();
        self.cpu.push(ratio_row(
            metric.clone(),
            secs(ours.cpu),
            secs(baseline.cpu),
            cpu_ratio,
            None,
        ));
        self.rows.push(ratio_row(
            metric,
            secs(ours.median),
            secs(baseline.median),
            ratio,
            target,
        ));
    }
}

fn size_row(metric: String, ours: u64, baseline: u64, target: f64) -> Row {
    ratio_row(
        metric,
        mb(ours),
        mb(baseline),
        ours as f64 / baseline as f64,
        Some(target),
    )
}

fn print_table(rows: &[Row]) {
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .map(|r| [&*r.metric, &*r.ours, &*r.baseline, &*r.ratio, &*r.target, &*r.ok])
        .collect();
    artgen_e2e::table::print(["metric", "ours", "baseline", "ratio", "target", "ok"], &cells);
}

// ---------------------------------------------------------------------------------------------------------
// The benchmarks

fn bench_compose(
    cfg: &Config,
    engine: &Engine,
    tree: &Tree,
    work: &Path,
    trash: &Trash,
    rows: &mut Report,
) -> Result<()> {
    let v = tree.variant.name().to_ascii_uppercase();
    let build_work = work.join("build");
    let (out1, out2) = (work.join("compose-ours-t1"), work.join("compose-ours-t2"));
    let (gz, pz) = (work.join("compose-gzip.tar.gz"), work.join("compose-pigz.tar.gz"));
    trash.fresh_dir(&build_work)?;
    let root = &tree.root;
    let mut contenders = [
        contender("ours, 1 thread", || {
            Ok(engine.build(&engine.compose, root, 1, &build_work, &out1)?.0)
        }),
        contender("ours, 2 threads", || {
            Ok(engine.build(&engine.compose, root, 2, &build_work, &out2)?.0)
        }),
        contender("tar | gzip -6", || tar_gz(root, &gz, false)),
        contender("tar | pigz -6 -p2", || tar_gz(root, &pz, true)),
    ];
    let s = measure(
        &format!("compose, variant {v}"),
        cfg.runs,
        tree.bytes,
        work,
        &mut contenders,
    )?;
    drop(contenders);
    let (a1, a2) = (out1.join("all.tar.gz"), out2.join("all.tar.gz"));
    ensure!(
        fs::read(&a1)? == fs::read(&a2)?,
        "the 1-thread and 2-thread archives differ"
    );
    let (ours, gzip, pigz) = (
        fs::metadata(&a1)?.len(),
        fs::metadata(&gz)?.len(),
        fs::metadata(&pz)?.len(),
    );
    println!(
        "  archive sizes: ours {}, gzip -6 {}, pigz -6 {} (tree {}, {} files)",
        mb(ours),
        mb(gzip),
        mb(pigz),
        mb(tree.bytes),
        tree.files
    );
    rows.time(format!("{v} compose 1 thread vs gzip -6"), s[0], s[2], Some(0.55));
    rows.time(
        format!("{v} compose 2 threads vs pigz -p2"),
        s[1],
        s[3],
        Some(0.8),
    );
    rows.push(size_row(
        format!("{v} compose archive size vs gzip -6"),
        ours,
        gzip,
        1.01,
    ));
    Ok(())
}

fn bench_decompose(
    cfg: &Config,
    engine: &Engine,
    tree: &Tree,
    work: &Path,
    trash: &Trash,
    rows: &mut Report,
) -> Result<()> {
    let v = tree.variant.name().to_ascii_uppercase();
    let build_work = work.join("build");
    let out = work.join("decompose-ours");
    let (gz, pz) = (work.join("decompose-gzip"), work.join("decompose-pigz"));
    trash.fresh_dir(&build_work)?;
    trash.fresh_dir(&gz)?;
    trash.fresh_dir(&pz)?;
    let root = &tree.root;
    let subtrees = |dest: &Path, pigz: bool| -> Result<Duration> {
        let started = Instant::now();
        for app in APPS {
            let file = dest.join(format!("app-{app}.tar.gz"));
            pipeline(
                vec![tar_create(&root.join("apps").join(app)), compressor(pigz)],
                Some(&file),
            )?;
        }
        Ok(started.elapsed())
    };
    let mut contenders = [
        contender("ours, 2 threads, 5 artifacts", || {
            let (t, artifacts) = engine.build(&engine.decompose, root, 2, &build_work, &out)?;
            ensure!(
                artifacts.len() == APPS.len(),
                "expected 5 artifacts, got {}",
                artifacts.len()
            );
            Ok(t)
        }),
        contender("5 x tar | gzip -6", || subtrees(&gz, false)),
        contender("5 x tar | pigz -6 -p2", || subtrees(&pz, true)),
    ];
    let s = measure(
        &format!("decompose, variant {v}"),
        cfg.runs,
        tree.bytes,
        work,
        &mut contenders,
    )?;
    drop(contenders);
    let (ours, gzip) = (dir_size(&out)?, dir_size(&gz)?);
    println!(
        "  archive sizes (sum of 5): ours {}, gzip -6 {}",
        mb(ours),
        mb(gzip)
    );
    rows.time(
        format!("{v} decompose 2 threads vs pigz -p2"),
        s[0],
        s[2],
        Some(0.8),
    );
    rows.time(format!("{v} decompose 2 threads vs gzip -6"), s[0], s[1], None);
    rows.push(size_row(
        format!("{v} decompose archive size vs gzip -6"),
        ours,
        gzip,
        1.01,
    ));
    Ok(())
}

/// The tree as `tar | gzip -6` bytes, with their sha256 hex.
struct Served {
    url: String,
    hex: String,
    size: u64,
}

fn serve_tree(server: &SourceServer, tree: &Tree, work: &Path) -> Result<Served> {
    let file = work.join(format!("served-{}.tar.gz", tree.variant.name()));
    tar_gz(&tree.root, &file, false)?;
    let body = fs::read(&file)?;
    fs::remove_file(&file)?;
    let hex = sha256_hex(&body);
    let size = body.len() as u64;
    let url = server.put(&format!("monorepo-{}.tar.gz", tree.variant.name()), body);
    Ok(Served { url, hex, size })
}

fn bench_fetch(
    cfg: &Config,
    engine: &Engine,
    tree: &Tree,
    served: &Served,
    places: &[(&'static str, PathBuf)],
    trash: &Trash,
    rows: &mut Report,
) -> Result<()> {
    let v = tree.variant.name().to_ascii_uppercase();
    let client = fetch::client();
    let limits = Limits::for_mode(ExtractMode::Source);
    let opts = HttpOptions::default();
    for (place, parent) in places {
        trash.fresh_dir(parent)?;
        let curl_dir = parent.join("curl");
        let ours = || -> Result<Duration> {
            let started = Instant::now();
            let (unpacked, dir) = engine.rt.block_on(fetch::fetch(
                &client,
                &served.url,
                Some(&served.hex),
                parent,
                ExtractMode::Source,
                &limits,
                &opts,
            ))?;
            let elapsed = started.elapsed();
            ensure!(
                unpacked.files == tree.files && unpacked.bytes == tree.bytes,
                "fetched {} files / {} bytes, the tree has {} / {}",
                unpacked.files,
                unpacked.bytes,
                tree.files,
                tree.bytes
            );
            trash.discard(&dir.keep())?;
            Ok(elapsed)
        };
        let curl = || -> Result<Duration> {
            fs::create_dir(&curl_dir)?;
            let started = Instant::now();
            let mut get = Command::new("curl");
            get.args(["-s", "--fail"]).arg(&served.url);
            let mut untar = Command::new("tar");
            untar.arg("-xzf").arg("-").arg("-C").arg(&curl_dir);
            pipeline(vec![get, untar], None)?;
            let elapsed = started.elapsed();
            trash.discard(&curl_dir)?;
            Ok(elapsed)
        };
        let mut contenders = [
            contender("ours: fetch+verify+extract", ours),
            contender("curl | tar -xzf -", curl),
        ];
        let title = format!(
            "fetch+verify+extract, variant {v}, {} tar.gz, extracted to {place} ({})",
            mb(served.size),
            parent.display()
        );
        let s = measure(&title, cfg.runs, tree.bytes, parent, &mut contenders)?;
        rows.time(
            format!("{v} fetch+verify+extract ({place}) vs curl|tar"),
            s[0],
            s[1],
            Some(0.7),
        );
    }
    Ok(())
}

/// Max RSS in MiB of one `artgen build` run, and its wall time.
fn peak_rss(args: &[OsString], work: &Path, trash: &Trash) -> Result<(f64, Duration)> {
    let rss_file = work.join("rss.txt");
    let out = work.join("memory-out");
    trash.fresh_dir(&out)?;
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(BIN)
        .args(args)
        .arg("--output")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .context("running artgen under /usr/bin/time")?;
    let elapsed = started.elapsed();
    ensure!(
        output.status.success(),
        "artgen build failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = fs::read_to_string(&rss_file)?;
    let kib: f64 = text
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .with_context(|| format!("unexpected /usr/bin/time output {text:?}"))?;
    trash.discard(&out)?;
    Ok((kib / 1024.0, elapsed))
}

fn bench_memory(tree: &Tree, served: &Served, work: &Path, trash: &Trash, rows: &mut Report) -> Result<()> {
    let v = tree.variant.name().to_ascii_uppercase();
    let generator = work.join("compose.yaml");
    fs::write(&generator, COMPOSE_YAML)?;
    let mut dir_source = OsString::from("repo=");
    dir_source.push(&tree.root);
    let url_source = OsString::from(format!("repo={}#sha256:{}", served.url, served.hex));
    println!("\npeak memory, variant {v} (artgen build under /usr/bin/time -f %M)");
    for (what, source) in [("directory source", dir_source), ("URL source", url_source)] {
        let args = [
            "build".into(),
            "-f".into(),
            generator.clone().into_os_string(),
            "--source".into(),
            source,
        ];
        let (mib, elapsed) = peak_rss(&args, work, trash)?;
        println!(
            "  {what:<34} max RSS {mib:>6.1} MiB   ({:.3} s)",
            elapsed.as_secs_f64()
        );
        rows.push(Row {
            metric: format!("{v} peak RSS, artgen build compose, {what}"),
            ours: format!("{mib:.1} MiB"),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "<= 64 MiB".into(),
            ok: if mib <= 64.0 { "yes" } else { "NO" }.into(),
        });
    }
    Ok(())
}

/// Removes a directory when dropped (the run's scratch space, also on errors).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn run() -> Result<()> {
    let cfg = Config::from_env()?;
    check_tools()?;
    let parse = |text: &str| parse_manifest(text).map_err(|e| anyhow::anyhow!("bench generator: {e}"));
    let engine = Engine {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        compose: parse(COMPOSE_YAML)?,
        decompose: parse(DECOMPOSE_YAML)?,
    };
    println!(
        "artgen issue-2 benchmark: runs={} variants={} parts={} data={}",
        cfg.runs,
        cfg.variants
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.only.iter().cloned().collect::<Vec<_>>().join(","),
        cfg.data.display()
    );
    println!(
        "machine: {} CPUs available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let work = cfg.data.join("work");
    let mut cleanup = Cleanup(vec![work.clone()]);
    if work.exists() {
        // Left over by an interrupted run: deleted at the end, see Trash.
        let stale = cfg.data.join(format!("stale-{}", std::process::id()));
        fs::rename(&work, &stale)?;
        cleanup.0.push(stale);
    }
    let trash = Trash::new(work.join("trash"))?;
    let mut places = vec![("target fs", work.join("fetch"))];
    if cfg.shm && cfg.wants("fetch") {
        let shm = Path::new(SHM).join(format!("artgen-bench-{}", std::process::id()));
        match fs::create_dir_all(&shm) {
            Ok(()) => {
                cleanup.0.push(shm.clone());
                places.push(("tmpfs", shm));
            }
            Err(e) => println!("note: /dev/shm unavailable ({e}); skipping the tmpfs fetch"),
        }
    }
    let server = SourceServer::start()?;

    let mut rows = Report::default();
    for &variant in &cfg.variants {
        let tree = ensure_tree(&cfg.data, variant)?;
        println!(
            "\n=== variant {}: {} files, {} in {}",
            variant.name(),
            tree.files,
            mb(tree.bytes),
            tree.root.display()
        );
        if cfg.wants("compose") {
            bench_compose(&cfg, &engine, &tree, &work, &trash, &mut rows)?;
        }
        if cfg.wants("decompose") {
            bench_decompose(&cfg, &engine, &tree, &work, &trash, &mut rows)?;
        }
        if cfg.wants("fetch") || cfg.wants("memory") {
            let served = serve_tree(&server, &tree, &work)?;
            if cfg.wants("fetch") {
                bench_fetch(&cfg, &engine, &tree, &served, &places, &trash, &mut rows)?;
            }
            if cfg.wants("memory") {
                bench_memory(&tree, &served, &work, &trash, &mut rows)?;
            }
        }
    }
    println!(
        "\nResults (medians of {} runs; ratio = ours / baseline):\n",
        cfg.runs
    );
    print_table(&rows.rows);
    if !rows.cpu.is_empty() {
        println!(
            "\nFor information, CPU time medians (user + system of this process and its children; ratio = ours / baseline):\n"
        );
        print_table(&rows.cpu);
    }
    // Deleting the trash (every extracted tree of the run) takes a while on ext4.
    println!("\nremoving this run's scratch files under {} ...", work.display());
    drop(cleanup);
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
