//! Controller end-to-end tests (architecture §8 tier 3) against a real kube-apiserver + etcd: sources are
//! published by the source-controller fixture on a loopback HTTP server, the controller runs in-process,
//! and artifacts are downloaded from the real artifact server.

mod harness;
mod plugins;

use std::time::Instant;

use artgen_e2e::fixtures::SourceKind;
use harness::{Env, Result, artifact_of, condition, revision_of, uid};
use kube::ResourceExt;

const GENERATOR_LABEL: &str = "source.extensions.fluxcd.io/generator";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composes_three_sources() -> Result {
    let env = Env::new("compose").await?;
    let s = env.sources();
    s.create(SourceKind::GitRepository, "backend").await?;
    s.create(SourceKind::OciRepository, "frontend").await?;
    s.create(SourceKind::Bucket, "config").await?;
    let git = s
        .publish_files(
            SourceKind::GitRepository,
            "backend",
            "main@sha1:1111111111111111111111111111111111111111",
            &[
                ("deploy/app.yaml", b"kind: Deployment\n"),
                ("README.md", b"not copied\n"),
            ],
        )
        .await?;
    s.publish_files(
        SourceKind::OciRepository,
        "frontend",
        "v1.0.0",
        &[("manifests/ui.yaml", b"ui: 1\n")],
    )
    .await?;
    s.publish_files(
        SourceKind::Bucket,
        "config",
        "sha256:abc",
        &[("envs/prod/app.yaml", b"env: prod\n")],
    )
    .await?;
    let generator = env
        .apply_generator(
            r#"
metadata: {name: stack}
spec:
  commonMetadata:
    labels: {team: platform, app.kubernetes.io/managed-by: me}
    annotations: {owner: platform-team}
  sources:
    - {alias: backend, kind: GitRepository, name: backend}
    - {alias: frontend, kind: OCIRepository, name: frontend}
    - {alias: config, kind: Bucket, name: config}
  artifacts:
    - name: stack
      originRevision: "@backend"
      copy:
        - {from: "@backend/deploy/**", to: "@artifact/backend/"}
        - {from: "@frontend/manifests/*.yaml", to: "@artifact/frontend/"}
        - {from: "@config/envs/prod/**", to: "@artifact/config/"}
"#,
        )
        .await?;
    let ready = env.wait_ready("stack").await?;
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!(
        condition(&ready, "Ready").map(|c| c.message.as_str()),
        Some("reconciliation succeeded, generated 1 artifact(s)")
    );
    assert!(condition(&ready, "Reconciling").is_none() && condition(&ready, "Stalled").is_none());
    assert!(
        ready
            .finalizers()
            .iter()
            .any(|f| f == "source.extensions.fluxcd.io/finalizer")
    );
    assert!(
        status
            .observed_sources_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert_eq!(status.inventory.len(), 1);

    let ea = env.wait_external_artifact("stack", "ready", |_| true).await?;
    let artifact = artifact_of(&ea);
    let inv = &status.inventory[0];
    assert_eq!(artifact.digest.as_deref(), Some(inv.digest.as_str()));
    assert_eq!(artifact.revision, format!("latest@{}", inv.digest));
    assert_eq!(
        artifact.url,
        format!(
            "{}/externalartifact/{}/stack/{}",
            env.artifact_base, env.ns, inv.filename
        )
    );
    assert_eq!(
        artifact.path,
        format!("externalartifact/{}/stack/{}", env.ns, inv.filename)
    );
    assert_eq!(
        artifact
            .metadata
            .as_ref()
            .and_then(|m| m.get("org.opencontainers.image.revision")),
        Some(&git.revision),
        "origin revision falls back to the source revision"
    );
    // Labels: common labels, then the reserved ones win.
    let labels = ea.labels();
    assert_eq!(labels.get("team").map(String::as_str), Some("platform"));
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").map(String::as_str),
        Some("source-watcher")
    );
    assert_eq!(labels.get(GENERATOR_LABEL), Some(&uid(&generator)));
    assert_eq!(
        ea.annotations().get("owner").map(String::as_str),
        Some("platform-team")
    );
    let owner = &ea.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ArtifactGenerator", uid(&generator).as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let source_ref = ea.spec.source_ref.clone().expect("sourceRef");
    assert_eq!(
        (source_ref.kind.as_str(), source_ref.name.as_str()),
        ("ArtifactGenerator", "stack")
    );
    let ea_ready = &ea.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (ea_ready.status.as_str(), ea_ready.message.as_str()),
        ("True", "Artifact is ready")
    );

    let files = env.artifact_files(&ea).await?;
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["backend/app.yaml", "config/app.yaml", "frontend/ui.yaml"]
    );
    // File 0600 in a 0700 directory (spec §10.1).
    let file = env.storage_path("stack").join(&inv.filename);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(env.storage_path("stack"))?.permissions().mode() & 0o777,
        0o700
    );

    let event = env
        .wait_event("stack", "Ready", "external artifacts reconciled")
        .await?;
    assert_eq!(
        event.message.as_deref(),
        Some(format!("external artifacts reconciled: {}/stack ({})", env.ns, inv.digest).as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decomposes_a_monorepo_and_follows_directories() -> Result {
    let env = Env::new("monorepo").await?;
    let s = env.sources();
    s.create(SourceKind::GitRepository, "mono").await?;
    let files_v1: Vec<(&str, &[u8])> = vec![
        ("apps/auth/deploy.yaml", b"auth: 1\n"),
        ("apps/billing/deploy.yaml", b"billing: 1\n"),
    ];
    s.publish_files(SourceKind::GitRepository, "mono", "main@sha1:aaaa", &files_v1)
        .await?;
    env.apply_generator(
        r#"
metadata: {name: apps}
spec:
  commonMetadata: {labels: {app: common, team: platform}}
  pathPattern: "@repo/apps/{app}"
  sources:
    - {alias: repo, kind: GitRepository, name: mono}
  artifacts:
    - name: "{app}"
      copy:
        - {from: "@repo/apps/{app}/**", to: "@artifact/"}
"#,
    )
    .await?;
    env.wait_ready("apps").await?;
    let auth = env.wait_external_artifact("auth", "published", |_| true).await?;
    let billing = env
        .wait_external_artifact("billing", "published", |_| true)
        .await?;
    assert_eq!(
        auth.labels().get("app").map(String::as_str),
        Some("auth"),
        "capture label wins"
    );
    assert_eq!(auth.labels().get("team").map(String::as_str), Some("platform"));

    // A change under apps/auth only gives auth a new revision.
    s.publish_files(
        SourceKind::GitRepository,
        "mono",
        "main@sha1:bbbb",
        &[
            ("apps/auth/deploy.yaml", b"auth: 2\n"),
            ("apps/billing/deploy.yaml", b"billing: 1\n"),
        ],
    )
    .await?;
    let old_auth = revision_of(&auth);
    let auth2 = env
        .wait_external_artifact("auth", "new revision", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .is_some_and(|a| a.revision != old_auth)
        })
        .await?;
    env.wait_generator("apps", "sources observed", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.inventory
                .iter()
                .any(|e| Some(&e.digest) == artifact_of(&auth2).digest.as_ref())
        })
    })
    .await?;
    let billing2 = env.external_artifacts().get("billing").await?;
    assert_eq!(
        revision_of(&billing2),
        revision_of(&billing),
        "billing did not change"
    );
    assert_eq!(env.artifact_files(&auth2).await?["deploy.yaml"], "auth: 2\n");

    // Adding a directory creates an ExternalArtifact; removing one deletes it and its storage.
    s.publish_files(
        SourceKind::GitRepository,
        "mono",
        "main@sha1:cccc",
        &[
            ("apps/auth/deploy.yaml", b"auth: 2\n"),
            ("apps/search/deploy.yaml", b"search: 1\n"),
        ],
    )
    .await?;
    let search = env.wait_external_artifact("search", "created", |_| true).await?;
    assert_eq!(search.labels().get("app").map(String::as_str), Some("search"));
    env.wait_external_artifact_gone("billing").await?;
    let billing = env.storage_path("billing");
    env.wait("billing storage removed", || async {
        Ok((!billing.exists()).then_some(()))
    })
    .await?;
    env.wait_event(
        "apps",
        "GarbageCollectionSucceeded",
        &format!("{}/billing", env.ns),
    )
    .await?;
    let g = env.wait_ready("apps").await?;
    let names: Vec<_> = g.status.unwrap().inventory.into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["auth", "search"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_with_merged_values_and_chaining() -> Result {
    let env = Env::new("helm-chain").await?;
    let s = env.sources();
    s.create(SourceKind::HelmChart, "podinfo").await?;
    s.create(SourceKind::GitRepository, "fleet").await?;
    s.publish_files(
        SourceKind::HelmChart,
        "podinfo",
        "6.5.0",
        &[
            ("podinfo/Chart.yaml", b"name: podinfo\nversion: 6.5.0\n"),
            (
                "podinfo/values.yaml",
                b"replicaCount: 1\nimage:\n  tag: 6.5.0\n  pullPolicy: IfNotPresent\n",
            ),
        ],
    )
    .await?;
    s.publish_files(
        SourceKind::GitRepository,
        "fleet",
        "main@sha1:dddd",
        &[("values-prod.yaml", b"replicaCount: 3\nimage:\n  tag: 6.5.1\n")],
    )
    .await?;
    env.apply_generator(
        r#"
metadata: {name: podinfo}
spec:
  sources:
    - {alias: chart, kind: HelmChart, name: podinfo}
    - {alias: repo, kind: GitRepository, name: fleet}
  artifacts:
    - name: podinfo-composite
      revision: "@chart"
      copy:
        - {from: "@chart/", to: "@artifact/"}
        - {from: "@repo/values-prod.yaml", to: "@artifact/podinfo/values.yaml", strategy: Merge}
"#,
    )
    .await?;
    // Chaining: a second generator reads the first one's ExternalArtifact.
    env.apply_generator(
        r#"
metadata: {name: downstream}
spec:
  sources:
    - {alias: composite, kind: ExternalArtifact, name: podinfo-composite}
  artifacts:
    - name: podinfo-values
      originRevision: "@composite"
      copy:
        - {from: "@composite/podinfo/values.yaml", to: "@artifact/"}
"#,
    )
    .await?;
    env.wait_ready("podinfo").await?;
    let composite = env
        .wait_external_artifact("podinfo-composite", "published", |_| true)
        .await?;
    assert_eq!(revision_of(&composite), "6.5.0", "revision copied from the chart");
    let files = env.artifact_files(&composite).await?;
    assert_eq!(
        files["podinfo/values.yaml"],
        // 6.5.1 is a float in YAML 1.1, so the merge quotes it (spec §3.9).
        "replicaCount: 3\nimage:\n  tag: \"6.5.1\"\n  pullPolicy: IfNotPresent\n"
    );
    env.wait_ready("downstream").await?;
    let values = env
        .wait_external_artifact("podinfo-values", "published", |_| true)
        .await?;
    assert_eq!(
        env.artifact_files(&values).await?["values.yaml"],
        files["podinfo/values.yaml"]
    );

    // A new values file flows through both generators.
    s.publish_files(
        SourceKind::GitRepository,
        "fleet",
        "main@sha1:eeee",
        &[("values-prod.yaml", b"replicaCount: 5\n")],
    )
    .await?;
    let values2 = env
        .wait_external_artifact("podinfo-values", "updated", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .and_then(|a| a.digest.clone())
                != artifact_of(&values).digest
        })
        .await?;
    assert!(env.artifact_files(&values2).await?["values.yaml"].starts_with("replicaCount: 5\n"));
    let composite2 = env.external_artifacts().get("podinfo-composite").await?;
    assert_eq!(
        artifact_of(&values2)
            .metadata
            .as_ref()
            .and_then(|m| m.get("org.opencontainers.image.revision")),
        Some(&revision_of(&composite2)),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_change_reaches_every_dependent() -> Result {
    let env = Env::new("fanout").await?;
    let s = env.sources();
    s.create(SourceKind::GitRepository, "shared").await?;
    s.publish_files(
        SourceKind::GitRepository,
        "shared",
        "main@sha1:0001",
        &[("a.yaml", b"v: 1\n")],
    )
    .await?;
    const N: usize = 5;
    for i in 0..N {
        env.apply_generator(&format!(
            r#"
metadata: {{name: gen-{i}}}
spec:
  sources:
    - {{alias: src, kind: GitRepository, name: shared}}
  artifacts:
    - name: out-{i}-a
      copy: [{{from: "@src/a.yaml", to: "@artifact/"}}]
    - name: out-{i}-b
      revision: "@src"
      copy: [{{from: "@src/a.yaml", to: "@artifact/b.yaml"}}]
"#
        ))
        .await?;
    }
    for i in 0..N {
        env.wait_ready(&format!("gen-{i}")).await?;
    }
    let started = Instant::now();
    s.publish_files(
        SourceKind::GitRepository,
        "shared",
        "main@sha1:0002",
        &[("a.yaml", b"v: 2\n")],
    )
    .await?;
    for i in 0..N {
        env.wait_external_artifact(&format!("out-{i}-b"), "revision main@sha1:0002", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .is_some_and(|a| a.revision == "main@sha1:0002")
        })
        .await?;
    }
    let latency = started.elapsed();
    println!(
        "source change → {} ExternalArtifacts updated in {latency:?}",
        2 * N
    );
    for i in 0..N {
        let a = env.external_artifacts().get(&format!("out-{i}-a")).await?;
        assert_eq!(env.artifact_files(&a).await?["a.yaml"], "v: 2\n");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spec_stalls_and_recovers_missing_source_recovers() -> Result {
    let env = Env::new("stall").await?;
    // A missing source: not ready, not stalled, then recovers once the source appears.
    env.apply_generator(
        r#"
metadata: {name: app}
spec:
  sources: [{alias: git, kind: GitRepository, name: late}]
  artifacts:
    - name: app
      copy: [{from: "@git/**", to: "@artifact/../x/"}]
"#,
    )
    .await?;
    let g = env
        .wait_condition("app", "Stalled", "True", "ValidationFailed")
        .await?;
    let ready = condition(&g, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ValidationFailed")
    );
    assert!(
        ready.message.contains("copy[0]"),
        "message names the field: {}",
        ready.message
    );
    assert!(condition(&g, "Reconciling").is_none());
    env.wait_event("app", "ValidationFailed", "copy[0]").await?;

    env.apply_generator(
        r#"
metadata: {name: app}
spec:
  sources: [{alias: git, kind: GitRepository, name: late}]
  artifacts:
    - name: app
      copy: [{from: "@git/**", to: "@artifact/"}]
"#,
    )
    .await?;
    let g = env
        .wait_condition("app", "Ready", "False", "SourceFetchFailed")
        .await?;
    let ready = condition(&g, "Ready").unwrap();
    assert!(
        ready.message.starts_with("get sources failed: "),
        "{}",
        ready.message
    );
    assert!(ready.message.contains("\"late\" not found"), "{}", ready.message);
    assert!(
        condition(&g, "Stalled").is_none(),
        "a missing source is not terminal"
    );

    let s = env.sources();
    s.create(SourceKind::GitRepository, "late").await?;
    let g = env
        .wait_generator("app", "source not ready", |g| {
            condition(g, "Ready").is_some_and(|c| c.message.contains("is not ready"))
        })
        .await?;
    assert!(
        condition(&g, "Ready")
            .unwrap()
            .message
            .contains(&format!("source 'GitRepository/{}/late' is not ready", env.ns))
    );
    s.publish_files(
        SourceKind::GitRepository,
        "late",
        "main@sha1:0003",
        &[("x.yaml", b"x\n")],
    )
    .await?;
    env.wait_ready("app").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_source_refused_under_the_flag() -> Result {
    let env = Env::with("cross-ns", |s| s.no_cross_namespace_refs = true).await?;
    env.apply_generator(
        r#"
metadata: {name: app}
spec:
  sources: [{alias: git, kind: GitRepository, name: other-repo, namespace: elsewhere}]
  artifacts:
    - name: app
      copy: [{from: "@git/**", to: "@artifact/"}]
"#,
    )
    .await?;
    let g = env
        .wait_condition("app", "Stalled", "True", "AccessDenied")
        .await?;
    let message = &condition(&g, "Ready").unwrap().message;
    assert!(
        message.ends_with(
            "cross-namespace reference to source GitRepository/elsewhere/other-repo is not allowed"
        ),
        "{message}"
    );
    assert!(
        message.starts_with("spec.sources[0].namespace: "),
        "names the field: {message}"
    );
    Ok(())
}

async fn single_artifact(env: &Env, generator: &str, artifact: &str) -> Result {
    let s = env.sources();
    s.create(SourceKind::GitRepository, "repo").await?;
    s.publish_files(
        SourceKind::GitRepository,
        "repo",
        "main@sha1:0100",
        &[("app.yaml", b"app: 1\n")],
    )
    .await?;
    env.apply_generator(&format!(
        r#"
metadata: {{name: {generator}}}
spec:
  sources: [{{alias: git, kind: GitRepository, name: repo}}]
  artifacts:
    - name: {artifact}
      copy: [{{from: "@git/app.yaml", to: "@artifact/"}}]
"#
    ))
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_restored_foreign_objects_are_left_alone() -> Result {
    let env = Env::new("drift").await?;
    single_artifact(&env, "app", "app").await?;
    env.wait_ready("app").await?;
    let original = env.wait_external_artifact("app", "published", |_| true).await?;
    let digest = artifact_of(&original).digest.clone();

    // Edited by hand: status URL and a reserved label.
    let api = env.external_artifacts();
    let patch = serde_json::json!({"metadata": {"labels": {GENERATOR_LABEL: "someone-else"}}});
    api.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    let restored = env
        .wait_external_artifact("app", "label restored", |o| {
            o.labels().get(GENERATOR_LABEL) == original.labels().get(GENERATOR_LABEL)
        })
        .await?;
    assert_eq!(artifact_of(&restored).digest, digest);
    env.wait_event("app", "DriftDetected", "ExternalArtifactsChanged")
        .await?;

    // Deleted by hand.
    api.delete("app", &Default::default()).await?;
    let recreated = env
        .wait_external_artifact("app", "recreated", |o| {
            o.uid() != original.uid() && o.status.is_some()
        })
        .await?;
    assert_eq!(artifact_of(&recreated).digest, digest);

    // Stored file corrupted: detected at the next pass (requested), rebuilt with the same digest.
    let file = env
        .storage_path("app")
        .join(artifact_of(&recreated).path.rsplit('/').next().unwrap());
    std::fs::write(&file, b"garbage")?;
    env.annotate("app", "reconcile.fluxcd.io/requestedAt", Some("now-1"))
        .await?;
    env.wait_event("app", "ArtifactCorrupted", "does not match digest")
        .await?;
    env.wait_generator("app", "requestedAt handled", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("now-1")
    })
    .await?;
    env.wait("stored file restored", || async {
        Ok(std::fs::read(&file).ok().filter(|b| b != b"garbage").map(|_| ()))
    })
    .await?;
    let ea = env.external_artifacts().get("app").await?;
    env.artifact_files(&ea).await?;

    // Someone else's object with the name of an artifact: the generator stops and says why.
    env.create_foreign_external_artifact("taken").await?;
    env.apply_generator(
        r#"
metadata: {name: intruder}
spec:
  sources: [{alias: git, kind: GitRepository, name: repo}]
  artifacts:
    - name: taken
      copy: [{from: "@git/app.yaml", to: "@artifact/"}]
"#,
    )
    .await?;
    let g = env
        .wait_condition("intruder", "Stalled", "True", "OwnershipConflict")
        .await?;
    assert_eq!(
        condition(&g, "Ready").unwrap().message,
        format!(
            "ExternalArtifact {}/taken exists and is not managed by this generator",
            env.ns
        )
    );
    let taken = env.external_artifacts().get("taken").await?;
    assert!(
        taken.status.is_none() && taken.labels().get(GENERATOR_LABEL).is_none(),
        "left alone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_resume_and_delete() -> Result {
    let env = Env::new("lifecycle").await?;
    single_artifact(&env, "app", "app").await?;
    env.wait_ready("app").await?;
    let before = env.wait_external_artifact("app", "published", |_| true).await?;

    env.annotate("app", "source.extensions.fluxcd.io/reconcile", Some("Disabled"))
        .await?;
    env.wait_event("app", "ReconciliationDisabled", "Reconciliation is disabled")
        .await?;
    env.sources()
        .publish_files(
            SourceKind::GitRepository,
            "repo",
            "main@sha1:0200",
            &[("app.yaml", b"app: 2\n")],
        )
        .await?;
    // While suspended, a requestedAt is handled (copied) but nothing is rebuilt.
    env.annotate("app", "reconcile.fluxcd.io/requestedAt", Some("while-suspended"))
        .await?;
    env.wait_generator("app", "requestedAt handled", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("while-suspended")
    })
    .await?;
    let during = env.external_artifacts().get("app").await?;
    assert_eq!(
        artifact_of(&during).digest,
        artifact_of(&before).digest,
        "no change while suspended"
    );

    // Removing the annotation resumes at once.
    env.annotate("app", "source.extensions.fluxcd.io/reconcile", None)
        .await?;
    let after = env
        .wait_external_artifact("app", "rebuilt after resume", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.artifact.as_ref())
                .map(|a| a.digest.clone())
                != Some(artifact_of(&before).digest.clone())
        })
        .await?;
    assert_eq!(env.artifact_files(&after).await?["app.yaml"], "app: 2\n");

    env.delete_generator("app").await?;
    env.wait_external_artifact_gone("app").await?;
    env.wait("generator gone", || async {
        Ok(env.generators().get_opt("app").await?.is_none().then_some(()))
    })
    .await?;
    assert!(!env.storage_path("app").exists(), "storage removed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reverifies_and_rebuilds_without_downloading_again() -> Result {
    let mut env = Env::new("restart").await?;
    single_artifact(&env, "app", "app").await?;
    env.wait_ready("app").await?;
    let before = env.wait_external_artifact("app", "published", |_| true).await?;
    let source = env
        .sources()
        .artifact(SourceKind::GitRepository, "repo")
        .await?
        .unwrap();
    assert_eq!(env.sources().downloads(&source), 1);

    // Restart with storage intact: re-verified (re-hashed once), nothing downloaded, same URL and digest.
    env.stop_controller().await?;
    env.start_controller(Default::default())?;
    env.annotate("app", "reconcile.fluxcd.io/requestedAt", Some("after-restart"))
        .await?;
    env.wait_generator("app", "handled after restart", |g| {
        g.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            == Some("after-restart")
    })
    .await?;
    env.wait_event("app", "Ready", "No drift detected, 1 artifact(s) up to date")
        .await?;
    assert_eq!(
        env.sources().downloads(&source),
        1,
        "no download after a restart with storage"
    );
    let same = env.external_artifacts().get("app").await?;
    assert_eq!(artifact_of(&same).url, artifact_of(&before).url);

    // Restart with storage lost (emptyDir): rebuilt to the same file name and digest.
    env.stop_controller().await?;
    std::fs::remove_dir_all(env.storage_path("app"))?;
    env.start_controller(Default::default())?;
    env.annotate("app", "reconcile.fluxcd.io/requestedAt", Some("after-wipe"))
        .await?;
    let url = artifact_of(&before).url.clone();
    env.wait("artifact served again", || async {
        Ok(reqwest::get(&url).await?.status().is_success().then_some(()))
    })
    .await?;
    let rebuilt = env.external_artifacts().get("app").await?;
    assert_eq!(artifact_of(&rebuilt).digest, artifact_of(&before).digest);
    assert_eq!(artifact_of(&rebuilt).url, url);
    env.artifact_files(&rebuilt).await?;
    assert_eq!(
        env.sources().downloads(&source),
        2,
        "one download per new process cache"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharding_reconciles_only_matching_generators() -> Result {
    let env = Env::sharded("shard", "sharding.fluxcd.io/key=shard1").await?;
    let s = env.sources();
    s.create(SourceKind::GitRepository, "repo").await?;
    s.publish_files(
        SourceKind::GitRepository,
        "repo",
        "main@sha1:0300",
        &[("app.yaml", b"app: 1\n")],
    )
    .await?;
    for (name, shard) in [("mine", "shard1"), ("theirs", "shard2")] {
        env.apply_generator(&format!(
            r#"
metadata: {{name: {name}, labels: {{sharding.fluxcd.io/key: {shard}}}}}
spec:
  sources: [{{alias: git, kind: GitRepository, name: repo}}]
  artifacts:
    - name: {name}
      copy: [{{from: "@git/app.yaml", to: "@artifact/"}}]
"#
        ))
        .await?;
    }
    env.wait_ready("mine").await?;
    env.wait_external_artifact("mine", "published", |_| true).await?;
    // The other shard's generator was never touched: no finalizer, no status, no ExternalArtifact.
    let theirs = env.generators().get("theirs").await?;
    assert!(
        theirs.status.is_none() && theirs.finalizers().is_empty(),
        "{:?}",
        theirs.status
    );
    assert!(env.external_artifacts().get_opt("theirs").await?.is_none());
    Ok(())
}
