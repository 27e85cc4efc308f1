//! Smoke test of the real control plane (design/test-control-plane.md): etcd + kube-apiserver built from the Go
//! module proxy, Flux's published source CRDs, a GitRepository whose status the fixture writes like
//! source-controller would, a kube-rs watch that sees it change, and the artifact fetched over loopback HTTP.
//!
//! Run with `cargo test -p artgen-e2e --features control-plane --test control_plane_smoke`. A missing
//! prerequisite (Go, the binaries) fails the test with the command to run; it is never skipped.

use std::io::Read;
use std::time::Duration;

use artgen_e2e::control_plane::{ControlPlane, Error, flux_source_crds};
use artgen_e2e::fixtures::{Artifact, SourceKind, Sources, sha256_digest};
use artgen_e2e::source_server::SourceServer;
use futures_util::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

fn source_server() -> Result<SourceServer, Error> {
    SourceServer::start().map_err(|source| Error::Io {
        path: "source server on 127.0.0.1:0".into(),
        source,
    })
}

/// The next `status.artifact` seen by the watch that satisfies `wanted`, within [`WATCH_TIMEOUT`].
async fn watch_until<S>(stream: &mut S, wanted: impl Fn(&Option<Artifact>) -> bool) -> Option<Artifact>
where
    S: Stream<Item = Result<Option<Artifact>, watcher::Error>> + Unpin,
{
    let found = tokio::time::timeout(WATCH_TIMEOUT, async {
        while let Some(event) = stream.next().await {
            let artifact = event.expect("watch stream error");
            if wanted(&artifact) {
                return artifact;
            }
        }
        panic!("the watch stream ended");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no matching status.artifact within {WATCH_TIMEOUT:?}"))
}

async fn fetch(url: &str) -> Vec<u8> {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.bytes().await.expect("artifact body").to_vec()
}

fn untar(tarball: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut files = Vec::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("entry path").to_string_lossy().into_owned();
        let mut contents = String::new();
        entry.read_to_string(&mut contents).expect("entry contents");
        files.push((path, contents));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_repository_status_watch_and_artifact_download() -> Result<(), Error> {
    let cp = ControlPlane::shared().await?;
    let client = cp.client().await?;

    // The real apiserver, with the version the wrapper module pins.
    let version = client.apiserver_version().await.map_err(Error::Client)?;
    assert_eq!(version.major, "1");
    assert_eq!(version.git_version, cp.version());
    eprintln!(
        "kube-apiserver {} started in {:?}",
        version.git_version,
        cp.startup_time()
    );

    // Apply Flux's source CRDs (again; server-side apply is idempotent) and check they are served.
    let flux = flux_source_crds()?;
    let names: Vec<String> = flux.iter().filter_map(|c| c.metadata.name.clone()).collect();
    for expected in [
        "gitrepositories",
        "ocirepositories",
        "buckets",
        "helmcharts",
        "externalartifacts",
    ] {
        let name = format!("{expected}.source.toolkit.fluxcd.io");
        assert!(
            names.contains(&name),
            "{name} missing from Flux's CRDs: {names:?}"
        );
    }
    cp.apply_crds(&flux).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let installed = crds.list(&ListParams::default()).await.map_err(Error::Client)?;
    for name in &names {
        assert!(
            installed
                .items
                .iter()
                .any(|c| c.metadata.name.as_ref() == Some(name)),
            "{name} not installed"
        );
    }

    let namespace = cp.namespace("smoke-git").await?;
    assert!(namespace.starts_with("t-smoke-git-"), "{namespace}");
    let server = source_server()?;
    let sources = Sources::new(client.clone(), &server, &namespace);
    sources.create(SourceKind::GitRepository, "app").await?;

    // Watch the object with kube-rs before its status is written.
    let config = watcher::Config::default().fields("metadata.name=app");
    let mut artifacts = watcher(sources.api(SourceKind::GitRepository), config)
        .applied_objects()
        .map_ok(|object| Artifact::of(&object))
        .boxed();
    let initial = watch_until(&mut artifacts, |_| true).await;
    assert_eq!(initial, None, "a new GitRepository has no artifact");

    // First revision.
    let files_v1: &[(&str, &[u8])] = &[("deploy/app.yaml", b"replicas: 1\n"), ("README.md", b"v1\n")];
    let v1 = sources
        .publish_files(SourceKind::GitRepository, "app", "main@sha1:1111111", files_v1)
        .await?;
    let seen = watch_until(&mut artifacts, |a| {
        a.as_ref().is_some_and(|a| a.revision == v1.revision)
    })
    .await;
    assert_eq!(
        seen.as_ref(),
        Some(&v1),
        "status.artifact as written by the fixture"
    );
    let body = fetch(&v1.url).await;
    assert_eq!(sha256_digest(&body), v1.digest);
    assert_eq!(body.len() as u64, v1.size);
    assert_eq!(
        untar(&body),
        vec![
            ("deploy/app.yaml".into(), "replicas: 1\n".into()),
            ("README.md".into(), "v1\n".into())
        ]
    );

    // A new revision changes the status again; the watch sees it and the new URL serves the new tarball.
    let files_v2: &[(&str, &[u8])] = &[("deploy/app.yaml", b"replicas: 2\n")];
    let v2 = sources
        .publish_files(SourceKind::GitRepository, "app", "main@sha1:2222222", files_v2)
        .await?;
    let seen = watch_until(&mut artifacts, |a| {
        a.as_ref().is_some_and(|a| a.revision == v2.revision)
    })
    .await;
    assert_eq!(seen.as_ref(), Some(&v2));
    assert_ne!(v1.url, v2.url);
    assert_ne!(v1.digest, v2.digest);
    let body = fetch(&v2.url).await;
    assert_eq!(sha256_digest(&body), v2.digest);
    assert_eq!(
        untar(&body),
        vec![("deploy/app.yaml".into(), "replicas: 2\n".into())]
    );
    assert_eq!(sources.downloads(&v1), 1);
    assert_eq!(sources.downloads(&v2), 1);

    // The Ready condition is there as consumers expect it.
    let object = sources
        .api(SourceKind::GitRepository)
        .get("app")
        .await
        .map_err(Error::Client)?;
    let ready = object.data.pointer("/status/conditions/0").expect("a condition");
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(
        object.data.pointer("/status/observedGeneration"),
        Some(&serde_json::json!(1))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_kind_takes_an_artifact() -> Result<(), Error> {
    let cp = ControlPlane::shared().await?;
    let namespace = cp.namespace("smoke-kinds").await?;
    let server = source_server()?;
    let sources = Sources::new(cp.client().await?, &server, &namespace);
    for kind in SourceKind::ALL {
        let name = kind.kind().to_ascii_lowercase();
        sources.create(kind, &name).await?;
        let published = sources
            .publish_files(kind, &name, "v1@sha256:abc", &[("x.txt", b"x")])
            .await?;
        assert_eq!(
            sources.artifact(kind, &name).await?,
            Some(published.clone()),
            "{kind:?}"
        );
        assert_eq!(
            sha256_digest(&fetch(&published.url).await),
            published.digest,
            "{kind:?}"
        );

        sources
            .set_not_ready(kind, &name, "GitOperationFailed", "boom")
            .await?;
        assert_eq!(
            sources.artifact(kind, &name).await?,
            None,
            "{kind:?}: artifact removed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_on_disk_works_and_namespaces_are_fresh() -> Result<(), Error> {
    let cp = ControlPlane::shared().await?;
    // What a binary under test gets through KUBECONFIG.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).map_err(|source| Error::Kubeconfig {
            path: cp.kubeconfig_path().into(),
            source,
        })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: cp.kubeconfig_path().into(),
            source,
        })?;
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), cp.server());
    let client = kube::Client::try_from(config).map_err(Error::Client)?;
    let a = cp.namespace("Fresh_Test").await?;
    let b = cp.namespace("Fresh_Test").await?;
    assert_ne!(a, b);
    assert!(a.starts_with("t-fresh-test-"), "{a}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    assert!(namespaces.get_opt(&a).await.map_err(Error::Client)?.is_some());
    assert!(cp.exited().is_none(), "etcd and kube-apiserver keep running");
    Ok(())
}
