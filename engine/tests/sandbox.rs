//! The plugin host against the real sample and hostile plugins of `plugins/` (design/plugins.md §11):
//! each sample's effect on a tree, each hostile plugin's failure reason, admission before compilation,
//! determinism across runs and directories, and the on-disk compiled-code cache.
//!
//! The plugins are built by `artgen_e2e::plugins::build()`. If that fails these tests fail with its
//! message (never skipped).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use artgen_e2e::plugins::{self, Built};
use artgen_e2e::tree::snapshot;
use artgen_engine::Error;
use artgen_engine::spec::{FailurePolicy, PluginRef, PluginSource, Quantity, Transform, TransformLimits};
use artgen_engine::transform::BLOCKING_THREAD;
use artgen_engine::transform::{
    Admission, Allowed, Host, HostOptions, Reason, Severity, SourceInfo, TransformContext, TransformError,
    TransformReport, TransformResult, canonical_json,
};
use serde_json::{Value, json};

fn built() -> &'static Built {
    match plugins::build() {
        Ok(b) => b,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("plugins did not build under CI: {e}")
        }
        Err(e) => panic!("plugins did not build (these tests need them): {e}"),
    }
}

/// One host shared by the tests that do not look at counters (its memory cache makes them fast).
fn shared_host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new(HostOptions::default()).unwrap())
}

/// A transform running `krate` (the plugin source path is the crate name; see [`run`]).
fn tf(name: &str, krate: &str, config: Value) -> Transform {
    Transform {
        name: name.into(),
        plugin: PluginRef {
            source: PluginSource {
                alias: "plugins".into(),
                path: krate.into(),
            },
            digest: built().digest(krate),
        },
        config: Some(config),
        read_sources: vec![],
        limits: None,
        failure_policy: None,
    }
}

fn with_limits(mut t: Transform, l: TransformLimits) -> Transform {
    t.limits = Some(l);
    t
}

fn q(s: &str) -> Option<Quantity> {
    Some(Quantity::Str(s.into()))
}

fn allow_all_of(ts: &[Transform]) -> Admission {
    Admission {
        allowed: ts
            .iter()
            .map(|t| Allowed::digest(t.plugin.digest.clone()))
            .collect(),
        ..Default::default()
    }
}

fn ctx() -> TransformContext {
    TransformContext {
        namespace: "team-a".into(),
        generator: "gen".into(),
        artifact: "my-app".into(),
        labels: BTreeMap::from([("env".to_string(), "prod".to_string())]),
        sources: vec![SourceInfo {
            alias: "app".into(),
            kind: "GitRepository".into(),
            revision: "main@sha1:abc".into(),
            digest: "sha256:00".into(),
        }],
    }
}

/// A build directory with `work/` (the staged tree) and `app/` (a source), plus a sentinel file next to
/// `work/` that no plugin may change.
struct Fixture {
    dir: tempfile::TempDir,
}

const SENTINEL: &str = "do not touch\n";

impl Fixture {
    fn new(prefix: &str) -> Fixture {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("sentinel.txt"), SENTINEL).unwrap();
        std::fs::write(dir.path().join("app/values.yaml"), "replicas: 3\n").unwrap();
        Fixture { dir }
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
    fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }
    fn write(&self, rel: &str, content: &str) {
        let p = self.work().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.work().join(rel)).is_ok()
    }
    fn sources(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([("app".to_string(), self.app())])
    }
    fn assert_outside_untouched(&self) {
        let s = std::fs::read_to_string(self.dir.path().join("sentinel.txt")).unwrap();
        assert_eq!(s, SENTINEL, "the file next to the work dir changed");
        let names: Vec<String> = std::fs::read_dir(self.app())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["values.yaml"], "the source directory changed");
        assert_eq!(
            std::fs::read_to_string(self.app().join("values.yaml")).unwrap(),
            "replicas: 3\n"
        );
    }
}

fn run_with(
    host: &Host,
    fx: &Fixture,
    ts: &[Transform],
    admission: &Admission,
) -> Result<Vec<TransformReport>, Error> {
    host.run_all(
        &fx.work(),
        ts,
        |t| Ok(built().bytes(&t.plugin.source.path)),
        &ctx(),
        &fx.sources(),
        admission,
    )
}

fn run(fx: &Fixture, ts: &[Transform]) -> Result<Vec<TransformReport>, Error> {
    run_with(shared_host(), fx, ts, &allow_all_of(ts))
}

fn ok(fx: &Fixture, ts: &[Transform]) -> Vec<TransformReport> {
    match run(fx, ts) {
        Ok(r) => r,
        Err(e) => panic!("expected success: {e}\n{e:?}"),
    }
}

fn failed(r: Result<Vec<TransformReport>, Error>) -> TransformError {
    match r {
        Ok(r) => panic!("expected a failure, got {r:#?}"),
        Err(Error::Transform(e)) => {
            eprintln!("{}: {e}", e.reason);
            *e
        }
        Err(e) => panic!("expected a transform error, got {e:?}"),
    }
}

fn has_code(r: &TransformReport, code: &str) -> bool {
    r.diagnostics.iter().any(|d| d.code == code)
}

// ---------------------------------------------------------------------------------------------------
// Samples

#[test]
fn values_templater_renders_with_config_and_source_values() {
    let fx = Fixture::new("tpl-");
    fx.write(
        "deploy/app.yaml.j2",
        "image: {{ image }}\nreplicas: {{ replicas }}\nns: {{ artgen.namespace }}/{{ artgen.labels.env }}\n",
    );
    let mut t = tf(
        "render",
        "values-templater",
        json!({"values": {"image": "nginx:1.27"}, "valuesFrom": "app"}),
    );
    t.read_sources = vec!["app".into()];
    let reports = ok(&fx, &[t]);
    assert_eq!(
        fx.read("deploy/app.yaml"),
        "image: nginx:1.27\nreplicas: 3\nns: team-a/prod\n"
    );
    assert!(!fx.exists("deploy/app.yaml.j2"));
    let r = &reports[0];
    assert_eq!(r.result, TransformResult::Succeeded);
    assert!(r.fuel_used > 0 && r.peak_memory_bytes > 0, "{r:?}");
    assert_eq!(r.plugin.as_ref().unwrap().name, "values-templater");
    fx.assert_outside_untouched();
}

/// Names of this process's threads (`comm`, cut to 15 bytes by the kernel).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect()
}

/// Set in the child process of [`file_writes_complete_inside_the_call`].
const WRITES_CHILD: &str = "ARTGEN_TEST_FILE_WRITES_CHILD";

/// 200 templates rendered and written, then no blocking-pool thread of the plugin runtime
/// ([`BLOCKING_THREAD`]) may exist. wasmtime-wasi's own file `write` hands every write to that pool and
/// the guest waits for it, which made a 1,000-file transform several times slower. The test reruns
/// itself in a child process, so no other test's threads are counted.
#[test]
fn file_writes_complete_inside_the_call() {
    if std::env::var_os(WRITES_CHILD).is_none() {
        built();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "file_writes_complete_inside_the_call", "--nocapture"])
            .env(WRITES_CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the child did not run the test: {text}"
        );
        return;
    }
    let fx = Fixture::new("writes-");
    for i in 0..200 {
        fx.write(&format!("d{}/f{i:03}.yaml.j2", i % 4), "n: {{ n }}\n");
    }
    let before = thread_names();
    ok(
        &fx,
        &[tf("render", "values-templater", json!({"values": {"n": 7}}))],
    );
    assert_eq!(fx.read("d3/f199.yaml"), "n: 7\n");
    let pool: Vec<String> = thread_names()
        .into_iter()
        .filter(|n| n == BLOCKING_THREAD)
        .collect();
    assert!(
        pool.is_empty(),
        "blocking-pool threads {pool:?} (before the run: {before:?})"
    );
}

#[test]
fn values_templater_strict_undefined_is_rejected_with_position() {
    let fx = Fixture::new("tpl-undef-");
    fx.write("a.yaml.j2", "ok: 1\nbad: {{ nope }}\n");
    let e = failed(run(&fx, &[tf("render", "values-templater", json!({}))]));
    assert_eq!(e.reason, Reason::TransformFailed);
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
        .expect("an error diagnostic");
    assert_eq!(d.path.as_deref(), Some("a.yaml.j2"), "{d:?}");
    assert_eq!(d.line, Some(2), "{d:?}");
    assert!(
        e.to_string().starts_with("my-app: transform render (sha256:"),
        "{e}"
    );
    assert!(fx.exists("a.yaml.j2"), "nothing is written on failure");
}

#[test]
fn image_tag_setter_rewrites_images_and_warns_on_unmatched() {
    let fx = Fixture::new("img-");
    fx.write(
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n",
    );
    let t = tf(
        "set-images",
        "image-tag-setter",
        json!({"images": [{"name": "nginx", "newTag": "1.27.2"}, {"name": "redis", "newTag": "7"}]}),
    );
    let reports = ok(&fx, &[t]);
    let out = fx.read("deploy.yaml");
    assert!(out.contains("image: nginx:1.27.2"), "{out}");
    assert!(
        has_code(&reports[0], "images.unmatched"),
        "{:?}",
        reports[0].diagnostics
    );
}

#[test]
fn config_is_checked_against_the_plugins_schema_before_the_plugin_runs() {
    let fx = Fixture::new("schema-");
    fx.write("deploy.yaml", "kind: Deployment\n");
    let t = tf(
        "set-images",
        "image-tag-setter",
        json!({"images": [{"name": "nginx", "newTag": "not a tag"}, {"newTag": "1"}], "imagez": []}),
    );
    let e = failed(run(&fx, &[t]));
    assert_eq!(e.reason, Reason::PluginConfigInvalid, "{e}");
    assert!(
        e.detail
            .starts_with("config does not match the plugin's schema: 3 errors"),
        "{e}"
    );
    let messages: Vec<&str> = e.diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert!(
        e.diagnostics.iter().all(|d| d.code == "artgen.config-schema"),
        "{messages:?}"
    );
    for at in ["config /:", "config /images/0/newTag:", "config /images/1:"] {
        assert!(messages.iter().any(|m| m.starts_with(at)), "{at} in {messages:?}");
    }
    let report = e.reports.last().unwrap();
    assert_eq!(
        report.instantiate_time,
        Duration::ZERO,
        "no transform store was made"
    );
    assert_eq!(report.fuel_used, 0);
    assert_eq!(fx.read("deploy.yaml"), "kind: Deployment\n");
}

#[test]
fn yaml_to_json_is_byte_exact() {
    let fx = Fixture::new("y2j-");
    fx.write("cfg/a.yaml", "b: 1.0\na: [x, {z: 2, y: true}]\n");
    ok(&fx, &[tf("json", "yaml-to-json", json!({}))]);
    assert_eq!(fx.read("cfg/a.json"), r#"{"a":["x",{"y":true,"z":2}],"b":1}"#);
    assert!(!fx.exists("cfg/a.yaml"));
}

#[test]
fn secret_scanner_rejects_with_path_and_line() {
    let fx = Fixture::new("sec-");
    fx.write("ok.txt", "nothing here\n");
    fx.write("leak/creds.env", "user=x\nkey=AKIAABCDEFGHIJKLMNOP\n");
    let e = failed(run(&fx, &[tf("scan", "secret-scanner", json!({}))]));
    assert_eq!(e.reason, Reason::TransformFailed);
    let d = &e.diagnostics[0];
    assert_eq!(d.code, "secrets.aws-access-key-id");
    assert_eq!((d.path.as_deref(), d.line), (Some("leak/creds.env"), Some(2)));
    assert!(
        !e.to_string().contains("AKIAABCDEFGHIJKLMNOP"),
        "the secret is not repeated: {e}"
    );
    // Allowed paths are not scanned.
    ok(
        &fx,
        &[tf("scan", "secret-scanner", json!({"allow": ["leak/**"]}))],
    );
}

#[test]
fn command_sample_runs_in_command_mode() {
    let fx = Fixture::new("cmd-");
    fx.write("a.txt", "hello\n");
    fx.write("b.md", "untouched\n");
    let reports = ok(
        &fx,
        &[tf("header", "command-sample", json!({"header": "# generated"}))],
    );
    assert_eq!(reports[0].mode, Some(artgen_engine::transform::Mode::Command));
    assert_eq!(fx.read("a.txt"), "# generated\nhello\n");
    assert_eq!(fx.read("b.md"), "untouched\n");
    // A forbidden word: error diagnostics and a non-zero exit ⇒ rejected.
    fx.write("c.txt", "one\nthe secret word\n");
    let e = failed(run(
        &fx,
        &[tf(
            "header",
            "command-sample",
            json!({"header": "# g", "forbid": ["secret"]}),
        )],
    ));
    assert_eq!(e.reason, Reason::TransformFailed);
    assert_eq!(e.diagnostics[0].path.as_deref(), Some("c.txt"));
    assert_eq!(e.diagnostics[0].line, Some(2));
    // Exit status 2 ⇒ invalid config; another status without diagnostics ⇒ plugin error.
    let e = failed(run(
        &fx,
        &[tf(
            "header",
            "command-sample",
            json!({"header": "# g", "exitCode": 2}),
        )],
    ));
    assert_eq!(e.reason, Reason::PluginConfigInvalid, "{e}");
    let e = failed(run(
        &fx,
        &[tf(
            "header",
            "command-sample",
            json!({"header": "# g", "exitCode": 7}),
        )],
    ));
    assert_eq!(e.reason, Reason::TransformFailed);
    assert!(e.to_string().contains("exited with status 7"), "{e}");
    // Missing required config ⇒ invalid config.
    let e = failed(run(&fx, &[tf("header", "command-sample", json!({}))]));
    assert_eq!(e.reason, Reason::PluginConfigInvalid, "{e}");
}

#[test]
fn samples_chain_and_are_deterministic_across_directories_and_staging_order() {
    let files = [
        ("z/values.yaml.j2", "name: {{ name }}\nlist: [3, 1, 2]\n"),
        ("a.yaml", "k: v\n"),
        ("m/n/o.yml", "- 1\n- 2\n"),
    ];
    let ts = [
        tf("render", "values-templater", json!({"values": {"name": "x"}})),
        tf("json", "yaml-to-json", json!({})),
    ];
    let a = Fixture::new("det-one-");
    for (p, c) in files {
        a.write(p, c);
    }
    let b = Fixture::new("determinism-other-name-");
    for (p, c) in files.iter().rev() {
        b.write(p, c);
    }
    let ra = ok(&a, &ts);
    let rb = ok(&b, &ts);
    assert_eq!(snapshot(&a.work()), snapshot(&b.work()));
    assert_eq!(a.read("z/values.json"), r#"{"list":[3,1,2],"name":"x"}"#);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.fuel_used, y.fuel_used, "fuel is deterministic");
    }
}

// ---------------------------------------------------------------------------------------------------
// Hostile plugins

#[test]
fn infinite_loop_spin_runs_out_of_fuel_with_identical_fuel() {
    let limits = TransformLimits {
        fuel: q("300M"),
        ..Default::default()
    };
    let t = with_limits(tf("spin", "infinite-loop", json!({"mode": "spin"})), limits);
    let mut fuel = vec![];
    for _ in 0..2 {
        let fx = Fixture::new("spin-");
        // A host each: the shared one would answer the second run from its failure memo.
        let host = Host::new(HostOptions::default()).unwrap();
        let ts = std::slice::from_ref(&t);
        let e = failed(run_with(&host, &fx, ts, &allow_all_of(ts)));
        assert_eq!(e.reason, Reason::TransformOutOfFuel, "{e}");
        assert!(e.to_string().ends_with("ran out of fuel (300M)"), "{e}");
        let r = e.reports.last().unwrap();
        assert_eq!(r.result, TransformResult::Failed);
        fuel.push(r.fuel_used);
    }
    assert_eq!(fuel[0], fuel[1]);
    assert!(fuel[0] > 0);
}

/// Design §8: a deterministic failure is memoised per run inputs, so a retry re-reports it without running
/// the plugin; other inputs run again, and a timeout (load-dependent) is never memoised.
#[test]
fn deterministic_failures_are_memoised_timeouts_are_not() {
    let host = Host::new(HostOptions::default()).unwrap();
    let memoised = |r: &TransformReport| has_code(r, "artgen.memoised");
    let spin = |fuel: &str| {
        with_limits(
            tf("spin", "infinite-loop", json!({"mode": "spin"})),
            TransformLimits {
                fuel: q(fuel),
                ..Default::default()
            },
        )
    };
    let attempt = |t: &Transform, tree: &str| {
        let fx = Fixture::new("memo-");
        fx.write("a.txt", tree);
        let ts = std::slice::from_ref(t);
        let started = Instant::now();
        let e = failed(run_with(&host, &fx, ts, &allow_all_of(ts)));
        (e, started.elapsed())
    };
    let (first, ran) = attempt(&spin("300M"), "one");
    assert!(!memoised(first.reports.last().unwrap()));
    let (again, replayed) = attempt(&spin("300M"), "one");
    let r = again.reports.last().unwrap();
    assert!(memoised(r), "{r:?}");
    assert_eq!(
        (again.reason, r.fuel_used),
        (Reason::TransformOutOfFuel, first.reports[0].fuel_used)
    );
    assert!(
        replayed < ran,
        "the replay ({replayed:?}) did not run the plugin ({ran:?})"
    );
    // Another tree or other limits are other inputs.
    assert!(!memoised(attempt(&spin("300M"), "two").0.reports.last().unwrap()));
    assert!(!memoised(attempt(&spin("200M"), "one").0.reports.last().unwrap()));

    let sleep = with_limits(
        tf("sleep", "infinite-loop", json!({"mode": "sleep"})),
        TransformLimits {
            timeout: Some("300ms".into()),
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let (e, _) = attempt(&sleep, "one");
        assert_eq!(e.reason, Reason::TransformTimeout, "{e}");
        assert!(!memoised(e.reports.last().unwrap()));
    }
}

#[test]
fn infinite_loop_sleep_times_out() {
    let fx = Fixture::new("sleep-");
    let limits = TransformLimits {
        timeout: Some("1s".into()),
        ..Default::default()
    };
    let started = Instant::now();
    let e = failed(run(
        &fx,
        &[with_limits(
            tf("sleep", "infinite-loop", json!({"mode": "sleep"})),
            limits,
        )],
    ));
    assert_eq!(e.reason, Reason::TransformTimeout, "{e}");
    assert!(e.to_string().ends_with("timed out after 1s"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        artgen_engine::Error::Transform(Box::new(e)).kind(),
        artgen_engine::ErrorKind::Transient
    );
}

#[test]
fn infinite_loop_spin_with_plenty_of_fuel_hits_the_timeout() {
    let fx = Fixture::new("spin-timeout-");
    let limits = TransformLimits {
        fuel: q("200G"),
        timeout: Some("1s".into()),
        ..Default::default()
    };
    let started = Instant::now();
    let e = failed(run(
        &fx,
        &[with_limits(tf("spin", "infinite-loop", json!({})), limits)],
    ));
    assert_eq!(e.reason, Reason::TransformTimeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let fx = Fixture::new("mem-");
    let limits = TransformLimits {
        memory: q("64Mi"),
        ..Default::default()
    };
    let e = failed(run(
        &fx,
        &[with_limits(tf("bomb", "memory-bomb", json!({})), limits)],
    ));
    assert_eq!(e.reason, Reason::TransformMemoryLimit, "{e}");
    assert!(e.to_string().ends_with("exceeded the memory limit (64Mi)"), "{e}");
    let r = e.reports.last().unwrap();
    assert!(r.peak_memory_bytes <= 64 << 20, "{}", r.peak_memory_bytes);
    assert!(r.peak_memory_bytes > 16 << 20, "{}", r.peak_memory_bytes);
}

#[test]
fn path_escape_fails_inside_and_its_symlink_is_rejected() {
    let fx = Fixture::new("escape-");
    fx.write("keep.txt", "k\n");
    let mut t = tf("escape", "path-escape", json!({"source": "app"}));
    t.read_sources = vec!["app".into()];
    let e = failed(run(&fx, &[t]));
    assert_eq!(e.reason, Reason::TransformOutputInvalid, "{e}");
    assert!(e.to_string().contains("is a symlink"), "{e}");
    // Every attempt was refused or contained: no diagnostic says an escape worked.
    let r = e.reports.last().unwrap();
    assert!(
        r.diagnostics.iter().all(|d| d.severity != Severity::Error),
        "{:#?}",
        r.diagnostics
    );
    assert!(has_code(r, "path-escape.read-absolute"), "{:#?}", r.diagnostics);
    fx.assert_outside_untouched();
    assert!(std::fs::read_to_string("/etc/passwd").is_ok());
}

#[test]
fn network_attempt_reaches_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind(addr).ok();
    if let Some(u) = &udp {
        u.set_nonblocking(true).unwrap();
    }
    let fx = Fixture::new("net-");
    let reports = ok(
        &fx,
        &[tf(
            "net",
            "network-attempt",
            json!({"addr": addr.to_string(), "host": "localhost"}),
        )],
    );
    for code in ["network.tcp", "network.udp", "network.dns"] {
        let d = reports[0]
            .diagnostics
            .iter()
            .find(|d| d.code == code)
            .unwrap_or_else(|| panic!("{code}"));
        assert_eq!(d.severity, Severity::Info, "{d:?}");
    }
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    if let Some(u) = udp {
        let mut buf = [0u8; 64];
        match u.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("the UDP socket got a datagram: {other:?}"),
        }
    }
}

#[test]
fn output_flood_many_files_is_invalid_output() {
    let fx = Fixture::new("flood-");
    let limits = TransformLimits {
        output_files: Some(100),
        ..Default::default()
    };
    let e = failed(run(
        &fx,
        &[with_limits(
            tf(
                "flood",
                "output-flood",
                json!({"mode": "many-files", "files": 300}),
            ),
            limits,
        )],
    ));
    assert_eq!(e.reason, Reason::TransformOutputInvalid, "{e}");
    assert!(e.to_string().contains("outputFiles"), "{e}");
}

#[test]
fn output_flood_deep_tree_is_invalid_output() {
    let fx = Fixture::new("deep-");
    let e = failed(run(
        &fx,
        &[tf(
            "deep",
            "output-flood",
            json!({"mode": "deep-tree", "depth": 80}),
        )],
    ));
    assert_eq!(e.reason, Reason::TransformOutputInvalid, "{e}");
    assert!(e.to_string().contains("deeper than 64"), "{e}");
}

#[test]
fn output_flood_big_file_is_stopped() {
    let fx = Fixture::new("big-");
    let limits = TransformLimits {
        output_bytes: q("8Mi"),
        ..Default::default()
    };
    let e = failed(run(
        &fx,
        &[with_limits(
            tf(
                "big",
                "output-flood",
                json!({"mode": "big-file", "bytes": 32 << 20}),
            ),
            limits,
        )],
    ));
    assert_eq!(e.reason, Reason::TransformOutputInvalid, "{e}");
}

#[test]
fn output_flood_stderr_succeeds_with_a_truncated_log() {
    let fx = Fixture::new("stderr-");
    let reports = ok(&fx, &[tf("noisy", "output-flood", json!({"mode": "stderr"}))]);
    let r = &reports[0];
    assert!(has_code(r, "artgen.log-truncated"), "{:?}", r.diagnostics);
    assert!(
        r.stderr.len() <= 64 << 10 && r.stderr.len() > 60_000,
        "{}",
        r.stderr.len()
    );
}

#[test]
fn nondeterminism_probe_sees_fixed_inputs_and_is_identical_across_runs() {
    let t = tf("probe", "nondeterminism-probe", json!({}));
    let mut outputs = vec![];
    for prefix in ["probe-a-", "probe-second-run-"] {
        let fx = Fixture::new(prefix);
        fx.write("one.txt", "1");
        ok(&fx, std::slice::from_ref(&t));
        outputs.push(fx.read("probe.json"));
    }
    assert_eq!(outputs[0], outputs[1]);
    let v: Value = serde_json::from_str(&outputs[0]).unwrap();
    assert_eq!(v["wallClockNanos"], 0, "{v}");
    assert_eq!(v["monotonicElapsedNanos"], 0, "{v}");
    assert_eq!(v["env"], json!([]), "{v}");
    assert_eq!(v["args"], json!(["plugin"]), "{v}");
    // The host sets `initial-cwd` to /work, but wasi-libc (Rust's wasm32-wasip2 std) starts at "/" whatever
    // the host says; either way it is fixed.
    assert!(v["cwd"] == "/work" || v["cwd"] == "/", "{v}");
}

#[test]
fn panic_is_trapped_with_the_message() {
    let fx = Fixture::new("panic-");
    let e = failed(run(&fx, &[tf("boom", "panic", json!({}))]));
    assert_eq!(e.reason, Reason::TransformTrapped, "{e}");
    assert!(e.to_string().contains("boom"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    assert!(
        e.reports[0].stderr.contains("boom"),
        "the captured stderr is kept: {:?}",
        e.reports[0].stderr
    );
}

#[test]
fn disallowed_import_is_incompatible_and_named() {
    let fx = Fixture::new("import-");
    let e = failed(run(&fx, &[tf("imp", "disallowed-import", json!({}))]));
    assert_eq!(e.reason, Reason::PluginIncompatible, "{e}");
    assert!(e.to_string().contains("test:forbidden/thing"), "{e}");
    assert_eq!(
        artgen_engine::Error::Transform(Box::new(e)).kind(),
        artgen_engine::ErrorKind::Terminal
    );
}

#[test]
fn core_module_is_incompatible_with_a_hint() {
    let fx = Fixture::new("core-");
    let e = failed(run(&fx, &[tf("core", "core-module", json!({}))]));
    assert_eq!(e.reason, Reason::PluginIncompatible, "{e}");
    assert!(e.to_string().contains("core WebAssembly module"), "{e}");
    assert!(e.to_string().contains("wasm32-wasip2"), "{e}");
}

// ---------------------------------------------------------------------------------------------------
// Admission, policy, caches

#[test]
fn refusals_happen_before_reading_or_compiling() {
    let host = Host::new(HostOptions::default()).unwrap();
    let fx = Fixture::new("adm-");
    let calls = Cell::new(0);
    let go = |ts: &[Transform], adm: &Admission| {
        host.run_all(
            &fx.work(),
            ts,
            |t| {
                calls.set(calls.get() + 1);
                Ok(built().bytes(&t.plugin.source.path))
            },
            &ctx(),
            &fx.sources(),
            adm,
        )
    };
    let t = tf("y", "yaml-to-json", json!({}));
    // Not on the allow-list.
    let e = failed(go(std::slice::from_ref(&t), &Admission::default()));
    assert_eq!(e.reason, Reason::PluginNotAllowed, "{e}");
    assert_eq!(e.reports.len(), 1);
    assert_eq!(e.reports[0].result, TransformResult::Failed);
    // Disabled.
    let e = failed(go(
        std::slice::from_ref(&t),
        &Admission {
            disabled: true,
            ..allow_all_of(std::slice::from_ref(&t))
        },
    ));
    assert_eq!(e.reason, Reason::PluginsDisabled, "{e}");
    // Above the policy ceiling, and a second transform refused before the first is read.
    let policy = Admission {
        allowed: vec![Allowed {
            digest: t.plugin.digest.clone(),
            ceilings: TransformLimits {
                fuel: q("1G"),
                ..Default::default()
            },
            allow_read_sources: false,
        }],
        ..Default::default()
    };
    let greedy = with_limits(
        tf("y2", "yaml-to-json", json!({})),
        TransformLimits {
            fuel: q("2G"),
            ..Default::default()
        },
    );
    let e = failed(go(&[t.clone(), greedy], &policy));
    assert_eq!(e.reason, Reason::PluginNotAllowed);
    assert!(
        e.to_string()
            .contains("limits.fuel 2G exceeds the allowed ceiling 1G"),
        "{e}"
    );
    let mut reader = t.clone();
    reader.read_sources = vec!["app".into()];
    let e = failed(go(&[reader], &policy));
    assert!(e.to_string().contains("allowReadSources"), "{e}");
    // Config over 1 MiB.
    let big = tf("big", "yaml-to-json", json!({"x": "a".repeat(1 << 20)}));
    let e = failed(go(
        std::slice::from_ref(&big),
        &allow_all_of(std::slice::from_ref(&big)),
    ));
    assert_eq!(e.reason, Reason::PluginConfigInvalid);
    assert_eq!(calls.get(), 0, "nothing was read");
    // The bytes do not match the pin: read, but never compiled.
    let mut wrong = tf("w", "yaml-to-json", json!({}));
    wrong.plugin.digest = built().digest("panic");
    let e = failed(go(
        std::slice::from_ref(&wrong),
        &allow_all_of(std::slice::from_ref(&wrong)),
    ));
    assert_eq!(e.reason, Reason::PluginDigestMismatch, "{e}");
    assert!(e.to_string().contains(&built().digest("yaml-to-json")), "{e}");
    // Missing plugin file.
    let e = failed(host.run_all(
        &fx.work(),
        std::slice::from_ref(&t),
        |_| Err(std::io::Error::new(ErrorKind::NotFound, "no such file")),
        &ctx(),
        &fx.sources(),
        &allow_all_of(std::slice::from_ref(&t)),
    ));
    assert_eq!(e.reason, Reason::PluginNotFound, "{e}");
    assert_eq!(host.stats().compiles, 0, "nothing was compiled");
    // --allow-any-plugin: the mismatch is a warning and the plugin runs.
    fx.write("a.yaml", "a: 1\n");
    let r = go(
        std::slice::from_ref(&wrong),
        &Admission {
            allow_any: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(has_code(&r[0], "artgen.digest-mismatch"));
    assert_eq!(r[0].plugin_digest, built().digest("yaml-to-json"));
    assert_eq!(host.stats().compiles, 1);
}

#[test]
fn failure_policy_ignore_restores_the_tree_and_continues() {
    let fx = Fixture::new("ignore-");
    fx.write("a.yaml", "a: 1\n");
    let mut boom = tf("boom", "panic", json!({}));
    boom.failure_policy = Some(FailurePolicy::Ignore);
    let mut flood = tf(
        "flood",
        "output-flood",
        json!({"mode": "many-files", "files": 50}),
    );
    flood.failure_policy = Some(FailurePolicy::Ignore);
    flood.limits = Some(TransformLimits {
        output_files: Some(10),
        ..Default::default()
    });
    let reports = ok(&fx, &[boom, flood, tf("json", "yaml-to-json", json!({}))]);
    assert_eq!(reports[0].result, TransformResult::Ignored);
    assert_eq!(reports[0].reason, Some(Reason::TransformTrapped));
    assert_eq!(reports[1].result, TransformResult::Ignored);
    assert_eq!(reports[1].reason, Some(Reason::TransformOutputInvalid));
    assert!(has_code(&reports[1], "artgen.transform-ignored"));
    assert_eq!(reports[2].result, TransformResult::Succeeded);
    assert!(!fx.exists("flood"), "the ignored step's changes were discarded");
    assert_eq!(fx.read("a.json"), r#"{"a":1}"#);
    // Terminal reasons are never ignored.
    let mut bad = tf("imp", "disallowed-import", json!({}));
    bad.failure_policy = Some(FailurePolicy::Ignore);
    assert_eq!(failed(run(&fx, &[bad])).reason, Reason::PluginIncompatible);
}

#[test]
fn disk_cache_is_used_by_a_second_host() {
    let cache = tempfile::tempdir().unwrap();
    let opts = HostOptions {
        cache_dir: Some(cache.path().join("plugins")),
        concurrency: 1,
    };
    let t = tf("render", "values-templater", json!({"values": {"a": 1}}));
    let adm = allow_all_of(std::slice::from_ref(&t));
    let fx = Fixture::new("cache-");
    fx.write("x.j2", "{{ a }}");

    let first = Host::new(opts.clone()).unwrap();
    run_with(&first, &fx, std::slice::from_ref(&t), &adm).unwrap();
    let s = first.stats();
    assert_eq!((s.compiles, s.disk_hits), (1, 0));
    // Warm runs: memory cache, fresh store each time.
    let mut inst = vec![];
    let mut total = vec![];
    for _ in 0..5 {
        fx.write("x.j2", "{{ a }}");
        let r = run_with(&first, &fx, std::slice::from_ref(&t), &adm).unwrap();
        inst.push(r[0].instantiate_time);
        total.push(r[0].duration);
    }
    assert_eq!(first.stats().compiles, 1);
    assert!(first.stats().memory_hits >= 5);
    let cold_ms = s.compile_time.as_secs_f64() * 1e3;
    drop(first);

    let second = Host::new(opts).unwrap();
    let started = Instant::now();
    let d = second.precompile(&built().bytes("values-templater")).unwrap();
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(d, t.plugin.digest);
    let s = second.stats();
    assert_eq!(
        (s.compiles, s.disk_hits),
        (0, 1),
        "loaded from disk without compiling"
    );
    fx.write("x.j2", "{{ a }}");
    run_with(&second, &fx, std::slice::from_ref(&t), &adm).unwrap();
    assert_eq!(fx.read("x"), "1");
    inst.sort();
    total.sort();
    eprintln!(
        "values-templater ({} KiB): cold compile {cold_ms:.1} ms, cached load (disk) {load_ms:.2} ms, \
         instantiate p50 {:?}, whole transform p50 {:?}",
        built().bytes("values-templater").len() >> 10,
        inst[2],
        total[2]
    );

    // The file is replaced the way a concurrent writer (`Disk::store`) does it, a new file renamed over
    // the old one, while `second` has it mapped: `second` keeps running the code it loaded.
    let dir = std::fs::read_dir(cache.path().join("plugins"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = vec![];
    std::fs::File::open(&file)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let replacement = dir.join(".replacement");
    std::fs::write(&replacement, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&replacement, &file).unwrap();
    let run_again = |host: &Host| {
        fx.write("x.j2", "{{ a }}");
        run_with(host, &fx, std::slice::from_ref(&t), &adm).unwrap();
        assert_eq!(fx.read("x"), "1");
    };
    run_again(&second);
    drop(second);

    // A corrupt cache file is a miss: recompiled (and rewritten), and the run still works.
    let fresh_host = || {
        Host::new(HostOptions {
            cache_dir: Some(cache.path().join("plugins")),
            concurrency: 0,
        })
        .unwrap()
    };
    let third = fresh_host();
    run_again(&third);
    assert_eq!((third.stats().compiles, third.stats().disk_hits), (1, 0));
    drop(third);
    // Truncated in place (no host has it mapped now), or given a second name: a miss each time.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(100)
        .unwrap();
    let fourth = fresh_host();
    run_again(&fourth);
    assert_eq!((fourth.stats().compiles, fourth.stats().disk_hits), (1, 0));
    drop(fourth);
    std::fs::hard_link(&file, dir.join("second-name")).unwrap();
    let fifth = fresh_host();
    run_again(&fifth);
    assert_eq!((fifth.stats().compiles, fifth.stats().disk_hits), (1, 0));
}

#[test]
fn runs_on_a_tokio_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fx = Fixture::new("tokio-");
    fx.write("a.yaml", "a: 1\n");
    let work = fx.work();
    let sources = fx.sources();
    let r = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let t = tf("json", "yaml-to-json", json!({}));
            let adm = allow_all_of(std::slice::from_ref(&t));
            shared_host().run_all(
                &work,
                std::slice::from_ref(&t),
                |t| Ok(built().bytes(&t.plugin.source.path)),
                &ctx(),
                &sources,
                &adm,
            )
        })
        .await
        .unwrap()
    });
    r.unwrap();
    assert_eq!(fx.read("a.json"), r#"{"a":1}"#);
}

#[test]
fn inspect_describes_a_plugin() {
    let d = shared_host().inspect(&built().bytes("image-tag-setter")).unwrap();
    assert_eq!(d.mode, artgen_engine::transform::Mode::Typed);
    assert!(
        d.exports
            .iter()
            .any(|e| e.starts_with("artgen:transform/transformer@0.1")),
        "{:?}",
        d.exports
    );
    assert_eq!(d.info.unwrap().name, "image-tag-setter");
    let c = shared_host().inspect(&built().bytes("command-sample")).unwrap();
    assert_eq!(c.mode, artgen_engine::transform::Mode::Command);
    assert!(c.info.is_none());
    let _ = canonical_json(&json!({}));
}

// ---------------------------------------------------------------------------------------------------
// A plugin in a second language: `plugins/go-command`, mainline Go (`GOOS=wasip1`) adapted into a command
// component by the test harness (design/plugins.md §4, §12).

const GO_DEPLOYMENT: &str = "\
# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
    team: old # replaced
spec:
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: nginx:1.27
";

const GO_SERVICES: &str = "\
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: flow-style}
";

fn go_labels(config: Value) -> Transform {
    tf("labels", "go-command", config)
}

fn go_fixture(prefix: &str, reverse: bool) -> Fixture {
    let fx = Fixture::new(prefix);
    let mut files = vec![
        ("deploy/web.yaml", GO_DEPLOYMENT),
        ("deploy/services.yml", GO_SERVICES),
        ("values.yaml", "replicaCount: 2\n"),
        ("README.txt", "not yaml\n"),
    ];
    if reverse {
        files.reverse();
    }
    for (p, c) in files {
        fx.write(p, c);
    }
    fx
}

fn tree_digest(dir: &Path) -> String {
    let mut bytes = vec![];
    for (path, data) in snapshot(dir) {
        bytes.extend_from_slice(path.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&data);
    }
    artgen_engine::transform::digest_of(&bytes)
}

/// Compiles and is accepted: a `wasi:cli/command` component whose imports are all on the allow-list.
#[test]
fn go_command_plugin_is_a_command_component() {
    let d = shared_host().inspect(&built().bytes("go-command")).unwrap();
    assert_eq!(d.mode, artgen_engine::transform::Mode::Command);
    assert!(d.info.is_none());
    assert!(
        d.imports.iter().any(|i| i.starts_with("wasi:cli/exit@0.2")),
        "{:?}",
        d.imports
    );
}

// The Go sample (mainline Go, wasip1, adapted to a command component). Go's runtime refuses to start on a
// monotonic clock reading 0, which is why the host's fixed clock reads 1.

#[test]
fn go_command_plugin_stamps_labels_in_command_mode() {
    let fx = go_fixture("go-", false);
    let config = json!({"labels": {"team": "payments", "app.kubernetes.io/part-of": "shop"}});
    let reports = ok(&fx, &[go_labels(config.clone())]);
    let r = &reports[0];
    assert_eq!(r.mode, Some(artgen_engine::transform::Mode::Command));
    assert_eq!(r.result, TransformResult::Succeeded);
    assert_eq!(
        fx.read("deploy/web.yaml"),
        GO_DEPLOYMENT.replace(
            "    team: old # replaced\n",
            "    team: \"payments\"\n    app.kubernetes.io/part-of: \"shop\"\n"
        ),
        "set in metadata.labels only, comments and the pod template untouched"
    );
    assert_eq!(
        fx.read("deploy/services.yml"),
        GO_SERVICES.replace(
            "  name: web\n",
            "  name: web\n  labels:\n    app.kubernetes.io/part-of: \"shop\"\n    team: \"payments\"\n"
        )
    );
    assert_eq!(fx.read("values.yaml"), "replicaCount: 2\n", "not a manifest");
    assert_eq!(fx.read("README.txt"), "not yaml\n");
    // Diagnostics in walk order: one info per stamped manifest (path, line of `metadata:`), a warning for what
    // the line editor leaves alone.
    let diags: Vec<(&str, Option<&str>, Option<u32>)> = r
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.path.as_deref(), d.line))
        .collect();
    assert_eq!(
        diags,
        [
            ("labels.stamped", Some("deploy/services.yml"), Some(4)),
            ("labels.skipped", Some("deploy/services.yml"), Some(11)),
            ("labels.stamped", Some("deploy/web.yaml"), Some(4)),
        ],
        "{:#?}",
        r.diagnostics
    );
    assert_eq!(r.diagnostics[1].severity, Severity::Warning);
    assert_eq!(
        r.diagnostics[2].message,
        "Deployment web: set app.kubernetes.io/part-of, team"
    );
    assert!(
        r.stdout
            .contains("go-command: artifact my-app: labels set on 2 of 3 manifest(s) in 3 file(s)"),
        "the other stdout lines are the log: {:?}",
        r.stdout
    );
    assert!(r.fuel_used > 0 && r.peak_memory_bytes > 0, "{r:?}");
    // A rerun changes nothing and says nothing but the warning.
    let before = snapshot(&fx.work());
    let again = ok(&fx, &[go_labels(config)]);
    assert_eq!(snapshot(&fx.work()), before);
    assert!(
        again[0].diagnostics.iter().all(|d| d.code == "labels.skipped"),
        "{:#?}",
        again[0].diagnostics
    );
    fx.assert_outside_untouched();
}

#[test]
fn go_command_plugin_exit_codes_classify() {
    let fx = go_fixture("go-exit-", false);
    let before = snapshot(&fx.work());
    // Exit 2 ⇒ invalid config, with the plugin's diagnostics.
    for config in [
        json!({}),
        json!({"labels": {"team": "not a label value"}}),
        json!({"labels": {"team": "x"}, "unknown": true}),
    ] {
        let e = failed(run(&fx, &[go_labels(config.clone())]));
        assert_eq!(e.reason, Reason::PluginConfigInvalid, "{config}: {e}");
        assert!(e.to_string().contains("exit status 2"), "{e}");
        assert_eq!(e.diagnostics[0].code, "config.invalid", "{:?}", e.diagnostics);
    }
    // Exit 1 with an error diagnostic ⇒ rejected, nothing written.
    let e = failed(run(
        &fx,
        &[go_labels(
            json!({"labels": {"team": "payments"}, "overwrite": false}),
        )],
    ));
    assert_eq!(e.reason, Reason::TransformFailed, "{e}");
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.severity == Severity::Error)
        .expect("an error diagnostic");
    assert_eq!(d.code, "labels.conflict");
    assert_eq!((d.path.as_deref(), d.line), (Some("deploy/web.yaml"), Some(8)));
    assert!(e.to_string().contains("rejected (exit status 1)"), "{e}");
    assert_eq!(snapshot(&fx.work()), before, "nothing is written when rejected");
}

#[test]
fn go_command_plugin_is_deterministic() {
    let t = go_labels(json!({"labels": {"team": "payments", "tier": "frontend"}}));
    let a = go_fixture("go-det-one-", false);
    let b = go_fixture("go-determinism-other-name-", true);
    let ra = ok(&a, std::slice::from_ref(&t));
    let rb = ok(&b, std::slice::from_ref(&t));
    assert_eq!(tree_digest(&a.work()), tree_digest(&b.work()));
    assert_ne!(
        tree_digest(&a.work()),
        tree_digest(&go_fixture("go-det-input-", false).work()),
        "the plugin changed the tree"
    );
    assert_eq!(ra[0].diagnostics, rb[0].diagnostics);
    assert_eq!(ra[0].stdout, rb[0].stdout);
    // Fuel is not compared: the Go runtime's scheduler and GC use a few thousand instructions more or less
    // from run to run (about 0.5%) without changing the output, which is what the guarantee covers.
}
