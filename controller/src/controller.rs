//! Wiring (architecture §5): watches, caches and the kube-runtime `Controller`, plus the process around it
//! (`artgen controller`): telemetry, leader election, the artifact, metrics and health servers.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use artgen_engine::fetch::{HttpOptions, Limits, SourceCache};
use artgen_engine::spec::SourceKind;
use artgen_engine::store::{Storage, advertised_url};
use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, controller, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::cli::controller::{Args, FeatureGates};
use crate::context::{Context, Settings, SourceStores};
use crate::crd::{ArtifactGenerator, ExternalArtifact, FluxSource, TransformPluginPolicy};
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::policy::{self, PolicyStores};
use crate::ratelimit::ApiBudget;
use crate::reconcile::{self, GENERATOR_LABEL, REQUESTED_AT_ANNOTATION, SUSPEND_ANNOTATION};

/// Start-up and serving failures of `artgen controller`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}")]
    Kube {
        context: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage")]
    Storage(#[source] artgen_engine::Error),
    #[error("{0}")]
    Config(String),
    #[error("lost leadership")]
    LostLease,
}

/// Everything the reconciler needs besides the client; built from the flags by [`Options::from_args`], or
/// directly by tests.
pub struct Options {
    pub settings: Settings,
    pub storage: Storage,
    pub concurrency: u16,
    /// Watch only this namespace (`--watch-all-namespaces=false`).
    pub namespace: Option<String>,
    /// `--watch-label-selector`.
    pub label_selector: String,
    pub gates: FeatureGates,
    pub events_addr: String,
    pub source_cache_max_size: u64,
    /// The reporting instance on events (the pod name).
    pub instance: String,
    /// A client with its own request budget for events (`None`: the main client).
    pub events_client: Option<Client>,
    /// The main client's rate limiter (default: unlimited).
    pub api_budget: ApiBudget,
}

impl Options {
    pub fn from_args(args: &Args, gates: FeatureGates) -> Result<Self, Error> {
        let hostname = hostname();
        let advertised = advertised_url(&args.storage_adv_addr, &args.storage_addr, &hostname);
        let storage = Storage::new(&args.storage_path, advertised).map_err(Error::Storage)?;
        let namespace =
            if args.watch_all_namespaces {
                None
            } else {
                Some(std::env::var("RUNTIME_NAMESPACE").map_err(|_| {
                    Error::Config("--watch-all-namespaces=false needs $RUNTIME_NAMESPACE".into())
                })?)
            };
        let limits = |max_bytes| Limits {
            max_bytes,
            max_entries: args.tarball_max_entries,
        };
        let settings = Settings {
            no_cross_namespace_refs: args.no_cross_namespace_refs,
            requeue_dependency: args.requeue_dependency,
            min_retry_delay: args.min_retry_delay,
            max_retry_delay: args.max_retry_delay,
            jitter_percentage: args.interval_jitter_percentage,
            retention_ttl: args.artifact_retention_ttl,
            retention_records: args.artifact_retention_records,
            reconciliation_timeout: args.reconciliation_timeout,
            source_limits: limits(args.source_max_size),
            extract_limits: limits(args.extract_max_size),
            http: HttpOptions {
                retries: args.http_retry,
                ..HttpOptions::default()
            },
            source_host_override: std::env::var("SOURCE_CONTROLLER_LOCALHOST")
                .ok()
                .filter(|s| !s.is_empty()),
            transforms: Some(artgen_engine::Transforms {
                host: std::sync::Arc::new(args.plugins.host().map_err(|f| Error::Config(f.message))?),
                admission: args
                    .plugins
                    .admission(false)
                    .map_err(|f| Error::Config(f.message))?,
                plugin_files: Default::default(),
                source_kinds: Default::default(),
            }),
            ..Settings::default()
        };
        Ok(Options {
            settings,
            storage,
            concurrency: args.concurrent,
            namespace,
            label_selector: args.watch_label_selector.clone(),
            gates,
            events_addr: args.events_addr.clone(),
            source_cache_max_size: args.source_cache_max_size,
            instance: hostname,
            events_client: None,
            api_budget: ApiBudget::default(),
        })
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "localhost".into())
}

/// The primary predicate (spec §9.1): generation, `requestedAt`, the suspend annotation, and deletion.
fn generator_trigger(generator: &ArtifactGenerator) -> Option<u64> {
    let mut h = std::hash::DefaultHasher::new();
    generator.meta().generation.hash(&mut h);
    generator.annotations().get(REQUESTED_AT_ANNOTATION).hash(&mut h);
    generator.annotations().get(SUSPEND_ANNOTATION).hash(&mut h);
    generator.meta().deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// What a source watch compares: `status.artifact` revision, digest and URL.
fn artifact_key(a: Option<&crate::crd::Artifact>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    a.map(|a| (&a.revision, &a.digest, &a.url)).hash(&mut h);
    h.finish()
}

/// A watch event stream reduced to the objects that changed in `key`; deletions always pass. The first sight
/// of an object passes too (the initial listing, or a re-list after a watch gap).
fn changes<K, S>(
    events: S,
    key: impl Fn(&K) -> u64 + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<(Option<String>, String), u64> = HashMap::new();
    events.filter_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let k = key(&o);
                let id = (
                    o.meta().namespace.clone(),
                    o.meta().name.clone().unwrap_or_default(),
                );
                (seen.insert(id, k) != Some(k)).then_some(Ok(o))
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&(
                    o.meta().namespace.clone(),
                    o.meta().name.clone().unwrap_or_default(),
                ));
                Some(Ok(o))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    })
}

/// Generators in the cache that reference the source `kind/ns/name`.
fn referencing(
    generators: &Store<ArtifactGenerator>,
    kind: SourceKind,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<ArtifactGenerator>> {
    generators
        .state()
        .iter()
        .filter(|g| {
            let gen_ns = g.namespace().unwrap_or_default();
            g.spec.sources.iter().any(|s| {
                s.kind == kind && s.name == name && s.namespace.as_deref().unwrap_or(&gen_ns) == namespace
            })
        })
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
}

/// Whether the TransformPluginPolicy CRD is served. Without it (a cluster set up with upstream's CRDs only)
/// the controller still works: only `--plugin-allow-digest` admits plugins, instead of a watch that never
/// syncs and keeps every generator waiting.
async fn policy_crd_installed(client: &Client) -> bool {
    let api = Api::<TransformPluginPolicy>::all(client.clone());
    match api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::warn!(
                "the TransformPluginPolicy CRD is not installed: plugins are admitted by --plugin-allow-digest only"
            );
            false
        }
        // Anything else (RBAC, a flaky apiserver) is for the watch to retry and report.
        _ => true,
    }
}

/// Generators with transforms, in `namespace` or in all of them: the ones a policy or label change affects.
fn with_transforms(
    generators: &Store<ArtifactGenerator>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<ArtifactGenerator>> {
    generators
        .state()
        .iter()
        .filter(|g| g.spec.artifacts.iter().any(|a| !a.transforms.is_empty()))
        .filter(|g| namespace.is_none_or(|ns| g.namespace().as_deref() == Some(ns)))
        .map(|g| ObjectRef::from_obj(&**g))
        .collect()
}

/// The API of a namespaced kind in the watched namespace, or in all of them.
fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn source_api(client: &Client, namespace: &Option<String>, kind: SourceKind) -> Api<FluxSource> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &kind),
        None => Api::all_with(client.clone(), &kind),
    }
}

/// Handles of a running controller, for probes.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Runs the reconciler until `shutdown` completes. The artifact server is not part of this: the caller
/// serves `options.storage` (the binary does, once it leads).
pub async fn run_controller(
    client: Client,
    options: Options,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let Options {
        settings,
        storage,
        concurrency,
        namespace,
        label_selector,
        gates,
        events_addr,
        source_cache_max_size,
        instance,
        events_client,
        api_budget,
    } = options;
    let wc = watcher::Config::default();
    let mut generator_wc = watcher::Config::default();
    if !label_selector.is_empty() {
        generator_wc = generator_wc.labels(&label_selector);
    }

    // Generators: cached, and triggering on the primary predicate only.
    let (generators, writer) = reflector::store();
    let (listed_tx, generators_listed) = tokio::sync::watch::channel(false);
    let trigger = watcher(api::<ArtifactGenerator>(&client, &namespace), generator_wc)
        .default_backoff()
        .reflect(writer)
        .inspect(move |ev| {
            if matches!(ev, Ok(watcher::Event::InitDone)) {
                let _ = listed_tx.send(true);
            }
        })
        .applied_objects()
        .predicate_filter(generator_trigger, Default::default());
    let mut ctl = Controller::for_stream(trigger, generators.clone())
        .with_config(controller::Config::default().concurrency(concurrency));

    // Sources: one cache per kind; events pass on a changed artifact.
    let mut stores = HashMap::new();
    let mut readiness: Vec<futures_util::future::BoxFuture<'static, bool>> = Vec::new();
    for kind in SourceKind::ALL
        .into_iter()
        .filter(|k| *k != SourceKind::ExternalArtifact)
    {
        let writer = reflector::store::Writer::new(kind);
        let store = writer.as_reader();
        let events = watcher(source_api(&client, &namespace, kind), wc.clone())
            .default_backoff()
            .reflect(writer);
        let gens = generators.clone();
        ctl = ctl.watches_stream_with(
            changes(events, |s: &FluxSource| artifact_key(s.artifact())),
            move |s: FluxSource| referencing(&gens, kind, &s.namespace().unwrap_or_default(), &s.name_any()),
            kind,
        );
        let s = store.clone();
        readiness.push(Box::pin(async move { s.wait_until_ready().await.is_ok() }));
        stores.insert(kind, store);
    }

    // ExternalArtifacts: both a source kind and what generators own (spec §9.1).
    let (external_artifacts, writer) = reflector::store::<ExternalArtifact>();
    let events = watcher(api::<ExternalArtifact>(&client, &namespace), wc.clone())
        .default_backoff()
        .reflect(writer);
    let gens = generators.clone();
    ctl = ctl.watches_stream(
        changes(events, |o: &ExternalArtifact| {
            let mut h = std::hash::DefaultHasher::new();
            artifact_key(o.status.as_ref().and_then(|s| s.artifact.as_ref())).hash(&mut h);
            o.labels().hash(&mut h);
            serde_json::to_string(&o.spec).unwrap_or_default().hash(&mut h);
            o.owner_references().len().hash(&mut h);
            h.finish()
        }),
        move |o: ExternalArtifact| {
            let ns = o.namespace().unwrap_or_default();
            let mut refs = referencing(&gens, SourceKind::ExternalArtifact, &ns, &o.name_any());
            let owner = o
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true) && r.kind == ArtifactGenerator::kind(&()))
                .map(|r| r.uid.clone());
            for uid in owner.into_iter().chain(o.labels().get(GENERATOR_LABEL).cloned()) {
                refs.extend(
                    gens.state()
                        .iter()
                        .filter(|g| g.uid().as_deref() == Some(uid.as_str()))
                        .map(|g| ObjectRef::from_obj(&**g)),
                );
            }
            refs
        },
    );
    let store = external_artifacts.clone();
    readiness.push(Box::pin(async move { store.wait_until_ready().await.is_ok() }));

    // Plugin policies and namespace labels (design/plugins.md §3): a change re-enqueues the generators
    // with transforms that it may affect.
    let policies = match &settings.transforms {
        Some(t) if !t.admission.disabled && !t.admission.allow_any && policy_crd_installed(&client).await => {
            let (policies, writer) = reflector::store::<TransformPluginPolicy>();
            let events = watcher(Api::<TransformPluginPolicy>::all(client.clone()), wc.clone())
                .default_backoff()
                .reflect(writer);
            let (gens, status_client) = (generators.clone(), client.clone());
            ctl = ctl.watches_stream(
                changes(events, |p: &TransformPluginPolicy| {
                    let mut h = std::hash::DefaultHasher::new();
                    serde_json::to_string(&p.spec).unwrap_or_default().hash(&mut h);
                    h.finish()
                }),
                move |p: TransformPluginPolicy| {
                    tokio::spawn(policy::update_status(status_client.clone(), Arc::new(p)));
                    with_transforms(&gens, None)
                },
            );
            let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
            let mut nwc = watcher::Config::default();
            if let Some(ns) = &namespace {
                nwc = nwc.fields(&format!("metadata.name={ns}"));
            }
            let events = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), nwc)
                .default_backoff()
                .reflect(writer);
            let gens = generators.clone();
            ctl = ctl.watches_stream(
                changes(events, |n: &PartialObjectMeta<Namespace>| {
                    let mut h = std::hash::DefaultHasher::new();
                    n.labels().hash(&mut h);
                    h.finish()
                }),
                move |n: PartialObjectMeta<Namespace>| with_transforms(&gens, Some(&n.name_any())),
            );
            for ready in [
                Box::pin({
                    let s = policies.clone();
                    async move { s.wait_until_ready().await.is_ok() }
                }) as futures_util::future::BoxFuture<'static, bool>,
                Box::pin({
                    let s = namespaces.clone();
                    async move { s.wait_until_ready().await.is_ok() }
                }),
            ] {
                readiness.push(ready);
            }
            Some(PolicyStores { policies, namespaces })
        }
        _ => None,
    };
    // A store's readiness wakes only one waiter (kube's DelayedInit holds one waker), so this task is the
    // only one awaiting the caches; everyone else watches `synced`.
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let ready = health.ready.clone();
    tokio::spawn(async move {
        let mut generators_listed = generators_listed;
        let caches = futures_util::future::join_all(readiness).await;
        let listed = generators_listed.wait_for(|l| *l).await.is_ok();
        if listed && caches.into_iter().all(|ok| ok) {
            tracing::info!("watch caches synced");
            ready.store(true, Ordering::Relaxed);
            let _ = synced_tx.send(true);
        }
    });

    let cache_root = tempfile::Builder::new()
        .prefix("artgen-source-cache-")
        .tempdir_in(settings.work_dir.clone().unwrap_or_else(std::env::temp_dir))
        .map_err(|source| Error::Io {
            context: "creating the source cache".into(),
            source,
        })?;
    let cache = SourceCache::new(cache_root.path(), source_cache_max_size).map_err(|source| Error::Io {
        context: "creating the source cache".into(),
        source,
    })?;
    let recorder = Recorder::new(
        events_client.unwrap_or_else(|| client.clone()),
        &events_addr,
        instance,
    );
    let sources = (!gates.direct_source_fetch).then_some(SourceStores { stores });
    let mut ctx = Context::new(
        client,
        settings,
        storage,
        cache,
        recorder,
        metrics,
        sources,
        external_artifacts,
        synced,
    );
    ctx.policies = policies;
    ctx.api_budget = api_budget;
    let ctx = Arc::new(ctx);
    ctl.graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %artgen_engine::chain(&e), "controller event");
            }
        })
        .await;
    drop(cache_root);
    Ok(())
}

/// `artgen controller`.
pub async fn run(args: Args, gates: FeatureGates) -> Result<(), Error> {
    crate::telemetry::init(&args.log_level, &args.log_encoding).map_err(Error::Config)?;
    let mut options = Options::from_args(&args, gates)?;
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(format!("kubeconfig: {e}")))?;
    config.read_timeout = Some(Duration::from_secs(300));
    let metrics = Metrics::new();
    let build_client = |config, name| {
        let (qps, burst) = (args.kube_api_qps, args.kube_api_burst);
        crate::ratelimit::client(config, qps, burst, metrics.clone(), name).map_err(|source| Error::Kube {
            context: "building the Kubernetes client",
            source,
        })
    };
    let (client, api_budget) = build_client(config.clone(), "controller")?;
    options.api_budget = api_budget;
    // Events get their own request budget, as client-go's event broadcaster has.
    options.events_client = Some(build_client(config, "events")?.0);
    let health = Health::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let bind = |addr: &str| {
        let addr = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.to_owned()
        };
        let context = format!("listening on {addr}");
        async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| Error::Io { context, source })
        }
    };
    let metrics_listener = bind(&args.metrics_addr).await?;
    let health_listener = bind(&args.health_addr).await?;
    tokio::spawn(crate::server::serve_probes(
        metrics_listener,
        health_listener,
        metrics.clone(),
        health.clone(),
        options.storage.clone(),
        stopped(),
    ));

    let signal = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    tokio::pin!(signal);
    let lease = if args.enable_leader_election {
        let namespace = std::env::var("RUNTIME_NAMESPACE").unwrap_or_else(|_| "flux-system".into());
        let lease = crate::leader::Lease::new(client.clone(), &namespace, &args, options.instance.clone());
        tokio::select! {
            acquired = lease.acquire() => acquired.map_err(|source| Error::Kube { context: "acquiring the leader lease", source })?,
            () = &mut signal => return Ok(()),
        }
        Some(lease)
    } else {
        None
    };

    let storage_listener = bind(&args.storage_addr).await?;
    let storage_root = options.storage.root().to_owned();
    let server = tokio::spawn(crate::server::serve(storage_listener, storage_root, stopped()));
    let controller = run_controller(client, options, metrics, health, stopped());
    tokio::pin!(controller);
    let result = tokio::select! {
        res = &mut controller => res,
        () = &mut signal => {
            let _ = stop_tx.send(true);
            controller.await
        }
        lost = async {
            match &lease {
                Some(l) => l.hold().await,
                None => std::future::pending().await,
            }
        } => {
            tracing::error!(error = ?lost, "leader lease lost; exiting");
            Err(Error::LostLease)
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(l) = lease
        && args.leader_election_release_on_cancel
    {
        l.release().await;
    }
    result
}
