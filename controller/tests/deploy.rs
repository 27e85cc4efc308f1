//! controller/deploy/ is what platform teams apply: it must be least privilege and internally consistent.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

const NAME: &str = "source-watcher";
const NAMESPACE: &str = "flux-system";
const LEADER_ELECTION: &str = "source-watcher-leader-election";

const EXTENSIONS: &str = "source.extensions.fluxcd.io";
const SOURCES: &str = "source.toolkit.fluxcd.io";
const READ: &[&str] = &["get", "list", "watch"];

/// `(apiGroup, resource, verbs)`: spec §11 "RBAC used", plus what plugin admission reads (design/plugins.md).
const CLUSTER_ROLE: &[(&str, &str, &[&str])] = &[
    (
        EXTENSIONS,
        "artifactgenerators",
        &["get", "list", "watch", "patch", "update"],
    ),
    (
        EXTENSIONS,
        "artifactgenerators/status",
        &["get", "patch", "update"],
    ),
    (EXTENSIONS, "artifactgenerators/finalizers", &["update"]),
    (EXTENSIONS, "transformpluginpolicies", READ),
    (EXTENSIONS, "transformpluginpolicies/status", &["patch"]),
    (SOURCES, "gitrepositories", READ),
    (SOURCES, "ocirepositories", READ),
    (SOURCES, "buckets", READ),
    (SOURCES, "helmcharts", READ),
    (
        SOURCES,
        "externalartifacts",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (SOURCES, "externalartifacts/status", &["patch"]),
    ("", "events", &["create", "patch"]),
    ("", "namespaces", READ),
];

const LEADER_ELECTION_ROLE: &[(&str, &str, &[&str])] =
    &[("coordination.k8s.io", "leases", &["get", "create", "update"])];

/// One permission: `(apiGroup, resource, verb)`.
type Grant = (String, String, String);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every (non-empty) document of `controller/deploy/<file>`.
fn load(file: &str) -> Vec<Value> {
    let path = deploy_dir().join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file} parses: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one object of `kind` named `name` in `file`.
fn object(file: &str, kind: &str, name: &str) -> Value {
    let mut found: Vec<Value> = load(file)
        .into_iter()
        .filter(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{file} has exactly one {kind} {name}");
    found.remove(0)
}

/// A list of strings; absent = empty.
fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("{s} is a string")))
        .collect()
}

fn expected(table: &[(&str, &str, &[&str])]) -> BTreeSet<Grant> {
    table
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(move |verb| (group.to_string(), resource.to_string(), verb.to_string()))
        })
        .collect()
}

/// Every permission the rules of a Role or ClusterRole grant.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        let keys: BTreeSet<&str> = rule
            .as_object()
            .expect("rule")
            .keys()
            .map(String::as_str)
            .collect();
        // Nothing else (nonResourceURLs, resourceNames) that the triples below would not show.
        assert_eq!(
            keys,
            BTreeSet::from(["apiGroups", "resources", "verbs"]),
            "rule {rule}"
        );
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
    }
    out
}

fn deployment() -> Value {
    object("deployment.yaml", "Deployment", NAME)
}

fn manager(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "manager")
        .expect("a container named manager")
}

/// The value of `--<name>=<value>` on the container's command line (`command` then `args`), if given.
fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    let mut values = strings(&container["command"])
        .into_iter()
        .chain(strings(&container["args"]))
        .filter_map(|arg| arg.strip_prefix(prefix.as_str()));
    let value = values.next();
    assert_eq!(values.next(), None, "--{name} is given at most once");
    value
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name} is set"))
}

/// The number of the container port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    let port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("a container port named {name}"));
    port["containerPort"].as_u64().expect("containerPort")
}

/// `path` is where an emptyDir volume is mounted read-write.
fn assert_writable_volume_at(pod: &Value, container: &Value, path: &str) {
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("a volume is mounted at {path}"));
    assert_ne!(mount["readOnly"], true, "{path} is writable");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("volume {} exists", mount["name"]));
    assert!(volume["emptyDir"].is_object(), "{path} is an emptyDir: {volume}");
}

#[test]
fn cluster_role_grants_exactly_the_rbac_the_controller_uses() {
    let role = object("rbac.yaml", "ClusterRole", NAME);
    let actual = grants(&role);
    let wanted = expected(CLUSTER_ROLE);
    let extra: Vec<&Grant> = actual.difference(&wanted).collect();
    let missing: Vec<&Grant> = wanted.difference(&actual).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "granted but not needed: {extra:?}; needed but not granted: {missing:?}"
    );
}

#[test]
fn leader_election_role_grants_only_leases_in_the_controller_namespace() {
    let role = object("rbac.yaml", "Role", LEADER_ELECTION);
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(grants(&role), expected(LEADER_ELECTION_ROLE));
}

#[test]
fn bindings_give_both_roles_to_the_deployments_service_account() {
    let deployment = deployment();
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], NAME);
    let account = object("rbac.yaml", "ServiceAccount", NAME);
    assert_eq!(account["metadata"]["namespace"], NAMESPACE);

    for (binding_kind, role_kind, name) in [
        ("ClusterRoleBinding", "ClusterRole", NAME),
        ("RoleBinding", "Role", LEADER_ELECTION),
    ] {
        let binding = object("rbac.yaml", binding_kind, name);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}),
            "{binding_kind} {name}"
        );
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]),
            "{binding_kind} {name}"
        );
    }
}

#[test]
fn pod_is_locked_down_and_writes_only_to_its_storage_and_tmp_volumes() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = manager(&deployment);

    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_eq!(pod_security["runAsUser"], 65534);
    assert_eq!(pod_security["runAsGroup"], 65534);
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        security["capabilities"]["add"].is_null(),
        "no capability is added back"
    );
    // The container must not undo the pod's settings.
    assert_ne!(security["privileged"], true);
    assert_ne!(security["runAsNonRoot"], false);
    assert_ne!(security["runAsUser"], 0);

    let storage = flag(container, "storage-path").expect("--storage-path is set");
    assert_writable_volume_at(pod, container, storage);
    let tmpdir = env(container, "TMPDIR")["value"]
        .as_str()
        .expect("TMPDIR has a value");
    assert_writable_volume_at(pod, container, tmpdir);
}

#[test]
fn service_and_advertised_address_reach_the_artifact_server() {
    let deployment = deployment();
    let container = manager(&deployment);
    // The server listens on --storage-addr, whose default is :9090 (spec §11).
    assert_eq!(flag(container, "storage-addr").unwrap_or(":9090"), ":9090");
    assert_eq!(container_port(container, "http"), 9090);

    let service = object("service.yaml", "Service", NAME);
    assert_eq!(
        service["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
    let ports = service["spec"]["ports"].as_array().expect("Service ports");
    assert_eq!(ports.len(), 1, "one Service port");
    assert_eq!(ports[0]["targetPort"], "http");
    // The advertised address has no port, so artifact URLs go to :80.
    assert_eq!(ports[0]["port"], 80);

    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    for (key, value) in service["spec"]["selector"].as_object().expect("Service selector") {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "the Service selects the pod by {key}"
        );
    }

    let advertised = flag(container, "storage-adv-addr").expect("--storage-adv-addr is set");
    assert_eq!(
        advertised,
        format!("{NAME}.$(RUNTIME_NAMESPACE).svc.cluster.local.")
    );
    assert_eq!(
        env(container, "RUNTIME_NAMESPACE")["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.namespace"}})
    );
}

#[test]
fn probes_hit_healthz_and_readyz_on_the_health_port() {
    let deployment = deployment();
    let container = manager(&deployment);
    // /healthz and /readyz are served on --health-addr, default :9440 (spec §11).
    assert_eq!(flag(container, "health-addr").unwrap_or(":9440"), ":9440");

    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let port = match &get["port"] {
            Value::String(name) => container_port(container, name),
            number => number
                .as_u64()
                .unwrap_or_else(|| panic!("{probe} port: {number}")),
        };
        assert_eq!(port, 9440, "{probe}");
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let documents = load("kustomization.yaml");
    assert_eq!(documents.len(), 1, "one Kustomization");
    let kustomization = &documents[0];
    assert_eq!(kustomization["kind"], "Kustomization");
    assert_eq!(kustomization["namespace"], NAMESPACE);

    let listed = strings(&kustomization["resources"]);
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "no resource is listed twice: {listed:?}"
    );
    for file in &unique {
        assert!(deploy_dir().join(file).is_file(), "{file} exists");
    }

    let on_disk: BTreeSet<String> = fs::read_dir(deploy_dir())
        .expect("read controller/deploy")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter(|name| (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = unique.iter().map(|file| file.to_string()).collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml lists exactly the manifests in controller/deploy"
    );
}
