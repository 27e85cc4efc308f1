//! Transforms in the controller (design/plugins.md §3, §8, §11): real plugins built from `plugins/`, served by
//! an OCIRepository like any source, admitted by TransformPluginPolicies that select namespaces by label, and
//! hostile plugins that fail their own artifact while the previous one stays published.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use artgen::crd::TransformPluginPolicy;
use artgen_e2e::fixtures::SourceKind;
use artgen_e2e::plugins;
use artgen_e2e::tree::{DEPLOYMENT, snapshot};
use artgen_engine::transform::{Admission, Allowed, Host, HostOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::harness::{Env, Result, artifact_of, condition};

/// A controller whose transforms use `host` and allow `allowed` by flag (`--plugin-allow-digest`).
async fn env_with_plugins(test: &str, host: Arc<Host>, allowed: Vec<String>, work: &Path) -> Result<Env> {
    let work = work.to_owned();
    Env::with(test, move |s| {
        s.work_dir = Some(work);
        s.transforms = Some(artgen_engine::Transforms {
            host,
            admission: Admission {
                allowed: allowed.into_iter().map(Allowed::digest).collect(),
                ..Admission::default()
            },
            plugin_files: Default::default(),
            source_kinds: Default::default(),
        });
    })
    .await
}

/// A plugin host whose compiled-code cache persists under the target dir, so that reruns skip compiling.
fn host() -> Result<Arc<Host>> {
    Ok(Arc::new(Host::new(HostOptions {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-plugin-cache")),
        concurrency: 2,
    })?))
}

/// Compiles `names` into `host` before the test waits on reconciles that run them: a cold compile of a large
/// plugin in a debug build on a busy machine can outlast the harness's wait (production warms the cache
/// with `artgen plugin precompile` for the same reason).
async fn warm(host: &Arc<Host>, names: &[&str]) -> Result {
    let built = plugins::build().map_err(|e| format!("building plugins/: {e}"))?;
    for name in names {
        let (host, bytes) = (host.clone(), built.bytes(name));
        tokio::task::spawn_blocking(move || host.precompile(&bytes))
            .await?
            .map_err(|e| format!("compiling {name}: {}", e.message))?;
    }
    Ok(())
}

/// Publishes the OCIRepository `transforms` holding `names` as `<name>.wasm`.
async fn publish_plugins(env: &Env, names: &[&str]) -> Result<BTreeMap<String, String>> {
    let built = plugins::build().map_err(|e| format!("building plugins/: {e}"))?;
    let files: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (format!("{n}.wasm"), built.bytes(n)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
    let s = env.sources();
    s.create(SourceKind::OciRepository, "transforms").await?;
    s.publish_files(SourceKind::OciRepository, "transforms", "v1@sha256:0a1b", &refs)
        .await?;
    Ok(names.iter().map(|n| (n.to_string(), built.digest(n))).collect())
}

fn step(name: &str, plugin: &str, digest: &str, extra: &str) -> String {
    format!(
        "        - name: {name}\n          plugin: {{source: {{alias: plugins, path: {plugin}.wasm}}, digest: \"{digest}\"}}\n{extra}"
    )
}

fn generator(name: &str, steps: &[String]) -> String {
    format!(
        r#"
metadata: {{name: {name}}}
spec:
  sources:
    - {{alias: app, kind: GitRepository, name: app}}
    - {{alias: plugins, kind: OCIRepository, name: transforms}}
  artifacts:
    - name: {name}
      revision: "@app"
      copy: [{{from: "@app/deploy/**", to: "@artifact/"}}]
      transforms:
{}"#,
        steps.concat()
    )
}

async fn label_namespace(env: &Env, key: &str, value: Option<&str>) -> Result {
    let api: Api<Namespace> = Api::all(env.client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
    api.patch(&env.ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn apply_policy(env: &Env, name: &str, spec: serde_json::Value) -> Result<TransformPluginPolicy> {
    let api: Api<TransformPluginPolicy> = Api::all(env.client.clone());
    let body = serde_json::json!({
        "apiVersion": "source.extensions.fluxcd.io/v1alpha1",
        "kind": "TransformPluginPolicy",
        "metadata": {"name": name},
        "spec": spec,
    });
    Ok(api
        .patch(
            name,
            &PatchParams::apply("e2e-admin").force(),
            &Patch::Apply(&body),
        )
        .await?)
}

/// A policy spec allowing `digest` in namespaces labelled `artgen.test/tenant=<tenant>`.
fn allow(name: &str, digest: &str, tenant: &str, max_limits: Option<serde_json::Value>) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "name": name,
        "digests": [digest],
        "namespaceSelector": {"matchLabels": {"artgen.test/tenant": tenant}},
    });
    if let Some(l) = max_limits {
        entry["maxLimits"] = l;
    }
    serde_json::json!({"plugins": [entry]})
}

async fn wait_policy_ready(env: &Env, name: &str, status: &str) -> Result<TransformPluginPolicy> {
    let api: Api<TransformPluginPolicy> = Api::all(env.client.clone());
    env.wait(&format!("policy {name} Ready={status}"), || async {
        let p = api.get(name).await?;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == status);
        Ok(ready.then_some(p))
    })
    .await
}

/// Deny by default; a policy selecting the namespace by label admits the digest; relabelling the namespace,
/// deleting the policy or lowering its ceiling stalls the generator with `PluginNotAllowed` while the
/// published artifact stays served; a refused plugin is never compiled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_admit_by_namespace_and_revocation_stalls() -> Result {
    let tmp = tempfile::tempdir()?;
    let host = host()?;
    std::fs::create_dir_all(tmp.path().join("work"))?;
    let env = env_with_plugins("plugin-policy", host.clone(), vec![], &tmp.path().join("work")).await?;
    let digests = publish_plugins(&env, &["image-tag-setter"]).await?;
    let setter = &digests["image-tag-setter"];
    let s = env.sources();
    s.create(SourceKind::GitRepository, "app").await?;
    s.publish_files(
        SourceKind::GitRepository,
        "app",
        "main@sha1:1111111111111111111111111111111111111111",
        &[("deploy/web.yaml", DEPLOYMENT.as_bytes())],
    )
    .await?;
    let steps = [step(
        "set-images",
        "image-tag-setter",
        setter,
        "          config: {images: [{name: nginx, newTag: \"1.27.2\"}]}\n          limits: {fuel: 5G}\n",
    )];
    env.apply_generator(&generator("web", &steps)).await?;

    // No policy selects this namespace: refused, terminally, before anything was compiled.
    let stalled = env
        .wait_condition("web", "Stalled", "True", "PluginNotAllowed")
        .await?;
    let message = &condition(&stalled, "Ready").unwrap().message;
    assert!(
        message.starts_with("web: transform set-images (sha256:") && message.contains("is not allowed"),
        "{message}"
    );
    let stats = host.stats();
    assert_eq!(
        (stats.compiles, stats.memory_hits, stats.disk_hits),
        (0, 0, 0),
        "a refused plugin is not compiled or loaded"
    );

    warm(&host, &["image-tag-setter"]).await?;
    // A policy for namespaces labelled `artgen.test/tenant=<ns>`; labelling the namespace admits the digest.
    let tenant = env.ns.clone();
    let policy = format!("{}-allow", env.ns);
    apply_policy(&env, &policy, allow("image-tag-setter", setter, &tenant, None)).await?;
    wait_policy_ready(&env, &policy, "True").await?;
    label_namespace(&env, "artgen.test/tenant", Some(&tenant)).await?;
    let ready = env.wait_ready("web").await?;
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!(status.transforms.len(), 1, "{:?}", status.transforms);
    let t = &status.transforms[0];
    assert_eq!((t.name.as_str(), &t.plugin_digest), ("set-images", setter));
    assert!(t.fuel_used.unwrap_or_default() > 0, "{t:?}");
    let ea = env.wait_external_artifact("web", "published", |_| true).await?;
    let files = env.artifact_files(&ea).await?;
    assert!(
        files["web.yaml"].contains("image: nginx:1.27.2"),
        "{}",
        files["web.yaml"]
    );
    let published = artifact_of(&ea).clone();

    // Relabelling the namespace revokes: Stalled, and the artifact stays as it was.
    label_namespace(&env, "artgen.test/tenant", Some("someone-else")).await?;
    env.wait_condition("web", "Stalled", "True", "PluginNotAllowed")
        .await?;
    let ea = env.external_artifacts().get("web").await?;
    assert_eq!(artifact_of(&ea), &published, "the published artifact stays");
    assert_eq!(env.artifact_files(&ea).await?, files, "and is still served");

    // The label back: admitted again without any other change.
    label_namespace(&env, "artgen.test/tenant", Some(&tenant)).await?;
    env.wait_ready("web").await?;

    // A ceiling below the requested fuel: refused, never clamped.
    apply_policy(
        &env,
        &policy,
        allow(
            "image-tag-setter",
            setter,
            &tenant,
            Some(serde_json::json!({"fuel": "1G"})),
        ),
    )
    .await?;
    let stalled = env
        .wait_condition("web", "Stalled", "True", "PluginNotAllowed")
        .await?;
    let message = &condition(&stalled, "Ready").unwrap().message;
    assert!(
        message.contains("limits.fuel 5G exceeds the allowed ceiling 1G"),
        "{message}"
    );
    env.wait_event("web", "PluginNotAllowed", "exceeds the allowed ceiling")
        .await?;

    // Deleting the policy revokes too; the artifact still stays.
    let api: Api<TransformPluginPolicy> = Api::all(env.client.clone());
    apply_policy(&env, &policy, allow("image-tag-setter", setter, &tenant, None)).await?;
    env.wait_ready("web").await?;
    api.delete(&policy, &DeleteParams::default()).await?;
    env.wait_condition("web", "Stalled", "True", "PluginNotAllowed")
        .await?;
    assert_eq!(
        artifact_of(&env.external_artifacts().get("web").await?),
        &published
    );

    // A policy whose ceilings exceed the controller's hard ceilings says so in its status.
    let greedy = format!("{}-greedy", env.ns);
    apply_policy(
        &env,
        &greedy,
        allow(
            "greedy",
            setter,
            "nobody",
            Some(serde_json::json!({"fuel": "500G"})),
        ),
    )
    .await?;
    let p = wait_policy_ready(&env, &greedy, "False").await?;
    let c = &p.status.unwrap().conditions[0];
    assert!(
        c.message.contains("spec.plugins[0] (greedy).maxLimits.fuel") && c.message.contains("hard ceiling"),
        "{}",
        c.message
    );
    api.delete(&greedy, &DeleteParams::default()).await?;
    let metrics = env.metrics.render();
    assert!(
        metrics.contains("artgen_transform_failures_total{reason=\"PluginNotAllowed\"}"),
        "{metrics}"
    );
    Ok(())
}

/// Sample plugins change the artifact through the controller; each hostile plugin then fails the artifact
/// with its reason and a Warning event, the previous artifact stays published and served, nothing outside
/// the transform's tree changes, and another generator keeps reconciling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_their_artifact_while_others_keep_serving() -> Result {
    let names = [
        "values-templater",
        "image-tag-setter",
        "yaml-to-json",
        "command-sample",
        "secret-scanner",
        "panic",
        "infinite-loop",
        "memory-bomb",
        "path-escape",
        "output-flood",
    ];
    let built = plugins::build().map_err(|e| format!("building plugins/: {e}"))?;
    let tmp = tempfile::tempdir()?;
    std::fs::create_dir_all(tmp.path().join("work"))?;
    let host = host()?;
    warm(&host, &names).await?;
    let allowed = names.iter().map(|n| built.digest(n)).collect();
    let env = env_with_plugins("plugin-hostile", host, allowed, &tmp.path().join("work")).await?;
    let d = publish_plugins(&env, &names).await?;
    let s = env.sources();
    s.create(SourceKind::GitRepository, "app").await?;
    let secret = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let values = |rev: &str| format!("replicas: {{{{ replicas }}}}\nrevision: {rev}\n");
    // NOTES.txt holds a secret for the scanner to find; only the victim runs the scanner.
    let notes = format!("key: {secret}\n");
    s.publish_files(
        SourceKind::GitRepository,
        "app",
        "main@sha1:1111111111111111111111111111111111111111",
        &[
            ("deploy/web.yaml", DEPLOYMENT.as_bytes()),
            ("deploy/values.yaml.j2", values("one").as_bytes()),
            ("deploy/NOTES.txt", notes.as_bytes()),
        ],
    )
    .await?;

    // Samples: render values, set images, prepend a header (command mode), then YAML to canonical JSON.
    let samples = [
        step(
            "render",
            "values-templater",
            &d["values-templater"],
            "          config: {values: {replicas: 3}}\n",
        ),
        step(
            "set-images",
            "image-tag-setter",
            &d["image-tag-setter"],
            "          config: {images: [{name: nginx, newTag: \"1.27.2\"}]}\n",
        ),
        step(
            "header",
            "command-sample",
            &d["command-sample"],
            "          config: {header: \"# generated\"}\n",
        ),
        step("to-json", "yaml-to-json", &d["yaml-to-json"], ""),
    ];
    env.apply_generator(&generator("good", &samples)).await?;
    env.apply_generator(&generator("victim", &samples[..1])).await?;
    env.wait_ready("good").await?;
    let good = env.wait_external_artifact("good", "published", |_| true).await?;
    let files = env.artifact_files(&good).await?;
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["NOTES.txt", "values.json", "web.json"],
        "{files:?}"
    );
    assert_eq!(files["values.json"], r#"{"replicas":3,"revision":"one"}"#);
    assert!(
        files["web.json"].contains(r#""image":"nginx:1.27.2""#),
        "{}",
        files["web.json"]
    );
    assert_eq!(files["NOTES.txt"], format!("# generated\n{notes}"));
    let ready = env.wait_ready("good").await?;
    let reports = ready.status.unwrap_or_default().transforms;
    assert_eq!(
        reports.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["render", "set-images", "header", "to-json"]
    );

    env.wait_ready("victim").await?;
    let victim = env
        .wait_external_artifact("victim", "published", |_| true)
        .await?;
    let published = artifact_of(&victim).clone();
    let victim_files = env.artifact_files(&victim).await?;
    assert_eq!(victim_files["values.yaml"], "replicas: 3\nrevision: one\n");
    let storage_before = snapshot(env.storage_dir.path());

    // Each hostile step, with the reason and a part of the message it must fail with.
    let hostile = [
        (
            step("scan", "secret-scanner", &d["secret-scanner"], ""),
            "TransformFailed",
            "secrets.aws-access-key-id",
        ),
        (step("boom", "panic", &d["panic"], ""), "TransformTrapped", "boom"),
        (
            step(
                "spin",
                "infinite-loop",
                &d["infinite-loop"],
                "          limits: {fuel: 200M}\n",
            ),
            "TransformOutOfFuel",
            "ran out of fuel",
        ),
        (
            step(
                "grow",
                "memory-bomb",
                &d["memory-bomb"],
                "          limits: {memory: 64Mi}\n",
            ),
            "TransformMemoryLimit",
            "memory",
        ),
        (
            step(
                "escape",
                "path-escape",
                &d["path-escape"],
                "          config: {source: app}\n          readSources: [app]\n",
            ),
            "TransformOutputInvalid",
            "symlink",
        ),
        (
            step(
                "flood",
                "output-flood",
                &d["output-flood"],
                "          config: {mode: many-files, files: 1000}\n          limits: {outputFiles: 500}\n",
            ),
            "TransformOutputInvalid",
            "",
        ),
    ];
    for (i, (bad, reason, text)) in hostile.iter().enumerate() {
        let mut steps = samples[..1].to_vec();
        steps.push(bad.clone());
        env.apply_generator(&generator("victim", &steps)).await?;
        let failed = env
            .wait_generator("victim", &format!("Ready=False {reason}"), |g| {
                condition(g, "Ready").is_some_and(|c| {
                    c.status == "False"
                        && c.reason == *reason
                        && c.observed_generation == g.metadata.generation
                })
            })
            .await?;
        let message = &condition(&failed, "Ready").unwrap().message;
        assert!(message.starts_with("victim: transform "), "{message}");
        assert!(message.contains(text), "{reason}: {message}");
        let status = failed.status.clone().unwrap_or_default();
        let last = status.transforms.last().expect("the failing step is reported");
        assert_eq!(last.reason, *reason, "{:?}", status.transforms);
        env.wait_event("victim", reason, "victim: transform").await?;
        // The previous artifact stays published and served, byte for byte.
        let ea = env.external_artifacts().get("victim").await?;
        assert_eq!(artifact_of(&ea), &published, "step {i} ({reason})");
        assert_eq!(env.artifact_files(&ea).await?, victim_files);
    }
    assert_eq!(
        snapshot(env.storage_dir.path()),
        storage_before,
        "storage is unchanged"
    );
    // path-escape tried to write into its read-only source mount: the cached source has no new file.
    let leaked: Vec<String> = snapshot(tmp.path())
        .into_keys()
        .filter(|p| p.ends_with("pwned.txt"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");

    // The other generator still follows its sources.
    s.publish_files(
        SourceKind::GitRepository,
        "app",
        "main@sha1:3333333333333333333333333333333333333333",
        &[
            ("deploy/web.yaml", DEPLOYMENT.as_bytes()),
            ("deploy/values.yaml.j2", values("three").as_bytes()),
        ],
    )
    .await?;
    let updated = env
        .wait_external_artifact("good", "revision 3333", |ea| {
            artifact_of(ea).revision.contains("3333333333")
        })
        .await?;
    let files = env.artifact_files(&updated).await?;
    assert_eq!(files["values.json"], r#"{"replicas":3,"revision":"three"}"#);

    let metrics = env.metrics.render();
    for needle in [
        "artgen_transform_runs_total{result=\"Succeeded\"}",
        "artgen_transform_failures_total{reason=\"TransformOutOfFuel\"}",
        "artgen_transform_failures_total{reason=\"TransformTrapped\"}",
        "artgen_plugin_cache_lookups_total{tier=\"memory\"}",
        "artgen_transform_fuel_used_count",
        "artgen_plugin_compile_duration_seconds_count",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    Ok(())
}
