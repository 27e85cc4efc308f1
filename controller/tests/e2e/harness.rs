//! The tier-3 harness: one real kube-apiserver + etcd per test binary, and per test a namespace, a loopback
//! source server playing source-controller, a storage directory, the artifact server and an in-process
//! controller that watches only that namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use artgen::context::Settings;
use artgen::controller::{Health, Options, run_controller};
use artgen::crd::{ArtifactGenerator, ExternalArtifact};
use artgen::metrics::Metrics;
use artgen_e2e::control_plane::{ControlPlane, flux_source_crds};
use artgen_e2e::fixtures::Sources;
use artgen_e2e::source_server::SourceServer;
use artgen_engine::store::Storage;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long any awaited state may take. Generous: CI machines are slow and tests run in parallel.
pub const WAIT: Duration = Duration::from_secs(60);

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub struct Env {
    pub client: Client,
    pub ns: String,
    pub server: SourceServer,
    pub storage_dir: tempfile::TempDir,
    pub artifact_base: String,
    stop_server: watch::Sender<bool>,
    controller: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// `--watch-label-selector` of the controllers this environment starts.
    selector: String,
    /// The metrics every controller of this environment records into.
    pub metrics: Metrics,
}

fn stopper(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl Env {
    /// A namespace with a running controller using default settings.
    pub async fn new(test: &str) -> Result<Env> {
        Self::with(test, |_| {}).await
    }

    pub async fn with(test: &str, settings: impl FnOnce(&mut Settings)) -> Result<Env> {
        Self::start(test, settings, String::new()).await
    }

    /// A controller that only reconciles generators matching `selector` (sharding).
    pub async fn sharded(test: &str, selector: &str) -> Result<Env> {
        Self::start(test, |_| {}, selector.to_owned()).await
    }

    async fn start(test: &str, settings: impl FnOnce(&mut Settings), selector: String) -> Result<Env> {
        // Controller logs for a failing test: RUST_LOG=artgen=debug cargo test ... -- --nocapture
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let cp = ControlPlane::shared().await?;
        static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        CRDS.get_or_try_init(|| async {
            let mut crds = artgen::crd::crds();
            crds.extend(flux_source_crds()?);
            cp.apply_crds(&crds).await
        })
        .await?;
        let client = cp.client().await?;
        let ns = cp.namespace(test).await?;
        let storage_dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let artifact_base = format!("http://{}", listener.local_addr()?);
        let (stop_server, rx) = watch::channel(false);
        tokio::spawn(artgen::server::serve(
            listener,
            storage_dir.path().to_owned(),
            stopper(&rx),
        ));
        let mut env = Env {
            client,
            ns,
            server: SourceServer::start()?,
            storage_dir,
            artifact_base,
            stop_server,
            controller: None,
            selector,
            metrics: Metrics::new(),
        };
        let mut s = Settings::default();
        settings(&mut s);
        env.start_controller(s)?;
        Ok(env)
    }

    /// Starts a fresh controller instance (new storage records, new source cache) on the same storage.
    pub fn start_controller(&mut self, settings: Settings) -> Result {
        assert!(self.controller.is_none(), "controller already running");
        let storage = Storage::new(self.storage_dir.path(), self.artifact_base.clone())?;
        let options = Options {
            settings,
            storage,
            concurrency: 4,
            namespace: Some(self.ns.clone()),
            label_selector: self.selector.clone(),
            gates: Default::default(),
            events_addr: String::new(),
            source_cache_max_size: 1 << 30,
            instance: "e2e".into(),
            events_client: None,
            api_budget: Default::default(),
        };
        let (tx, rx) = watch::channel(false);
        let (client, metrics) = (self.client.clone(), self.metrics.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = run_controller(client, options, metrics, Health::default(), stopper(&rx)).await {
                panic!("controller failed: {}", artgen_engine::chain(&e));
            }
        });
        self.controller = Some((tx, task));
        Ok(())
    }

    /// Stops the controller and waits until it has returned.
    pub async fn stop_controller(&mut self) -> Result {
        if let Some((tx, task)) = self.controller.take() {
            tx.send(true)?;
            tokio::time::timeout(WAIT, task).await??;
        }
        Ok(())
    }

    pub fn sources(&self) -> Sources<'_> {
        Sources::new(self.client.clone(), &self.server, &self.ns)
    }

    pub fn generators(&self) -> Api<ArtifactGenerator> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn external_artifacts(&self) -> Api<ExternalArtifact> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates or updates a generator from YAML (server-side apply as a person would with kubectl).
    pub async fn apply_generator(&self, yaml: &str) -> Result<ArtifactGenerator> {
        let mut value: serde_json::Value = yaml_serde::from_str(yaml)?;
        value["apiVersion"] = "source.extensions.fluxcd.io/v1beta1".into();
        value["kind"] = "ArtifactGenerator".into();
        value["metadata"]["namespace"] = self.ns.clone().into();
        let name = value["metadata"]["name"]
            .as_str()
            .ok_or("generator without a name")?
            .to_owned();
        let applied = self
            .generators()
            .patch(
                &name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&value),
            )
            .await?;
        Ok(applied)
    }

    pub async fn annotate(&self, name: &str, key: &str, value: Option<&str>) -> Result {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.generators()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    pub async fn delete_generator(&self, name: &str) -> Result {
        self.generators().delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// Polls `probe` until it returns `Some`, or fails after [`WAIT`] saying what was awaited.
    pub async fn wait<T, F, Fut>(&self, what: &str, probe: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        artgen_e2e::wait::until(&format!("{what} in {}", self.ns), WAIT, probe).await
    }

    /// Waits until the generator satisfies `pred`.
    pub async fn wait_generator(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ArtifactGenerator) -> bool,
    ) -> Result<ArtifactGenerator> {
        let api = self.generators();
        let last = std::sync::Mutex::new(None);
        let res = self
            .wait(&format!("generator {name}: {what}"), || async {
                let g = api.get_opt(name).await?;
                let hit = g.as_ref().is_some_and(&pred);
                *last.lock().unwrap() = g.clone();
                Ok(if hit { g } else { None })
            })
            .await;
        res.map_err(|e| {
            format!(
                "{e}; last seen status: {:?}",
                last.lock().unwrap().as_ref().map(|g| &g.status)
            )
            .into()
        })
    }

    /// Waits for Ready=True `Succeeded` at the current generation with an observed sources digest.
    pub async fn wait_ready(&self, name: &str) -> Result<ArtifactGenerator> {
        self.wait_generator(name, "Ready=True", |g| {
            let generation = g.metadata.generation;
            condition(g, "Ready").is_some_and(|c| {
                c.status == "True" && c.reason == "Succeeded" && c.observed_generation == generation
            })
        })
        .await
    }

    /// Waits for a condition with that type, status and reason.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Result<ArtifactGenerator> {
        self.wait_generator(name, &format!("{type_}={status} {reason}"), |g| {
            condition(g, type_).is_some_and(|c| c.status == status && c.reason == reason)
        })
        .await
    }

    pub async fn wait_external_artifact(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ExternalArtifact) -> bool,
    ) -> Result<ExternalArtifact> {
        let api = self.external_artifacts();
        self.wait(&format!("ExternalArtifact {name}: {what}"), || async {
            Ok(api.get_opt(name).await?.filter(|o| pred(o)))
        })
        .await
    }

    pub async fn wait_external_artifact_gone(&self, name: &str) -> Result {
        let api = self.external_artifacts();
        self.wait(&format!("ExternalArtifact {name} deleted"), || async {
            Ok(api.get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// Downloads an artifact URL from the artifact server.
    pub async fn download(&self, url: &str) -> Result<Vec<u8>> {
        let resp = reqwest::get(url).await?.error_for_status()?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// Files of an ExternalArtifact's archive, after checking that its bytes hash to its digest.
    pub async fn artifact_files(&self, ea: &ExternalArtifact) -> Result<BTreeMap<String, String>> {
        let artifact = ea
            .status
            .as_ref()
            .and_then(|s| s.artifact.as_ref())
            .ok_or("no artifact")?;
        let bytes = self.download(&artifact.url).await?;
        assert_eq!(
            Some(artgen_e2e::fixtures::sha256_digest(&bytes)),
            artifact.digest,
            "served bytes of {} hash to status.artifact.digest",
            artifact.url
        );
        let listing = artgen_e2e::archive::verify(&bytes)?;
        Ok(listing
            .files
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.data).into_owned()))
            .collect())
    }

    /// Events recorded on an object, oldest first.
    pub async fn events(&self, involved: &str) -> Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={involved}"));
        let mut events = api.list(&lp).await?.items;
        events.sort_by_key(|e| e.first_timestamp.clone().map(|t| t.0));
        Ok(events)
    }

    /// Waits for an event with that reason whose message contains `text`.
    pub async fn wait_event(&self, involved: &str, reason: &str, text: &str) -> Result<Event> {
        self.wait(&format!("event {reason} '{text}' on {involved}"), || async {
            Ok(self.events(involved).await?.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason) && e.message.as_deref().is_some_and(|m| m.contains(text))
            }))
        })
        .await
    }

    /// An ExternalArtifact created by someone else (no generator label).
    pub async fn create_foreign_external_artifact(&self, name: &str) -> Result<ExternalArtifact> {
        let mut ea = ExternalArtifact::new(name, &self.ns, Default::default());
        ea.spec.source_ref = Some(artgen::crd::external_artifact::SourceRef {
            api_version: Some("example.invalid/v1".into()),
            kind: "Producer".into(),
            name: "someone".into(),
            namespace: None,
        });
        Ok(self
            .external_artifacts()
            .create(&PostParams::default(), &ea)
            .await?)
    }

    /// The storage directory of an ExternalArtifact.
    pub fn storage_path(&self, name: &str) -> std::path::PathBuf {
        self.storage_dir
            .path()
            .join("externalartifact")
            .join(&self.ns)
            .join(name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((tx, _)) = &self.controller {
            let _ = tx.send(true);
        }
        let _ = self.stop_server.send(true);
    }
}

pub fn condition<'a>(
    g: &'a ArtifactGenerator,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    g.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

pub fn artifact_of(ea: &ExternalArtifact) -> &artgen::crd::Artifact {
    ea.status
        .as_ref()
        .and_then(|s| s.artifact.as_ref())
        .expect("ExternalArtifact has status.artifact")
}

pub fn revision_of(ea: &ExternalArtifact) -> String {
    artifact_of(ea).revision.clone()
}

pub fn uid(g: &ArtifactGenerator) -> String {
    g.uid().unwrap_or_default()
}
