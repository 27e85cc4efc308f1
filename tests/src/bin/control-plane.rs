//! `control-plane --kubeconfig PATH [--crds FILE]...`: provides kube-apiserver and etcd (building them if
//! needed), starts both on loopback, installs Flux's source CRDs (and those in each FILE), writes the kubeconfig
//! to PATH, prints `ready` on stdout and runs until SIGINT or SIGTERM. Then it stops both processes and removes
//! its temporary data. Everything else goes to stderr. Run it through `tests/bin/control-plane`.

use std::path::PathBuf;
use std::process::ExitCode;

use artgen_e2e::control_plane::{self, ControlPlane, Options, report};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: control-plane --kubeconfig PATH [--crds FILE]...

Starts etcd and kube-apiserver on 127.0.0.1 with Flux's source CRDs installed, writes an admin kubeconfig to
PATH, prints `ready` and runs until SIGINT/SIGTERM. --crds applies the CustomResourceDefinitions in FILE too
(for example controller/deploy/crds.yaml). Environment: see tests/src/control_plane/mod.rs.";

struct Args {
    kubeconfig: PathBuf,
    crds: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut kubeconfig = None;
    let mut crds = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .map(PathBuf::from)
                .or_else(|| args.next().map(PathBuf::from))
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(value()?),
            "--crds" => crds.push(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or("--kubeconfig PATH is required")?;
    Ok(Args { kubeconfig, crds })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("control-plane: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    // Install the handlers first: a signal during start-up then also ends in a clean stop.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;

    let mut options = Options::default();
    for file in &args.crds {
        options
            .crds
            .extend(control_plane::load_crds(file).map_err(|e| report(&e))?);
    }
    let cp = tokio::select! {
        started = ControlPlane::start(options) => started.map_err(|e| report(&e))?,
        _ = sigint.recv() => return Err("interrupted during start-up".into()),
        _ = sigterm.recv() => return Err("terminated during start-up".into()),
    };
    if let Some(dir) = args.kubeconfig.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    write_private(&args.kubeconfig, cp.kubeconfig())
        .map_err(|e| format!("write {}: {e}", args.kubeconfig.display()))?;
    eprintln!(
        "control-plane: {} (kube-apiserver {}) ready in {:.1}s; kubeconfig {}; pids {:?}",
        cp.server(),
        cp.version(),
        cp.startup_time().as_secs_f64(),
        args.kubeconfig.display(),
        cp.pids(),
    );
    println!("ready");

    // Watch the children while waiting: if one dies, stop the other and fail rather than serve half a cluster.
    let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = check.tick() => {
                if let Some((name, status)) = cp.exited() {
                    break Err(format!("{name} exited ({status}); logs:\n{}", cp.logs(100)));
                }
            }
        }
    };
    if let Ok(signal) = &outcome {
        eprintln!("control-plane: {signal}, stopping");
    }
    let work_dir = cp.work_dir().to_path_buf();
    tokio::task::spawn_blocking(move || cp.stop())
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("control-plane: stopped; removed {}", work_dir.display());
    outcome.map(|_| ())
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
