//! Child processes of the control plane: the keeper thread that spawns them, their logs, and stopping them.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, not when the process does. Test threads
//! come and go, and Rust statics are never dropped, so every child is spawned from one dedicated keeper thread
//! that lives until the control plane is stopped, which for the shared one means until the process exits. When
//! the test process dies in any way (a panic that aborts, SIGKILL, the end of `main`), the kernel kills etcd and
//! kube-apiserver: no orphans.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustix::process::{Pid, Signal};

use super::Error;

/// How long a child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

type SpawnReply = mpsc::Sender<io::Result<Child>>;

struct SpawnRequest {
    command: Command,
    reply: SpawnReply,
}

/// The thread every child is forked from (see the module docs). It runs until its handle is dropped.
pub struct Keeper {
    requests: Mutex<Option<mpsc::Sender<SpawnRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Keeper {
    pub fn start() -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = thread::Builder::new()
            .name("artgen-control-plane-keeper".into())
            .spawn(move || {
                for SpawnRequest { mut command, reply } in rx {
                    let parent = rustix::process::getpid();
                    set_parent_death_signal(&mut command, parent);
                    // The receiver may have given up; the child is then dropped here, and it is killed by
                    // PDEATHSIG at the latest when this thread ends.
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(|source| Error::Io {
                path: PathBuf::from("<keeper thread>"),
                source,
            })?;
        Ok(Self {
            requests: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Spawns `command` from the keeper thread.
    pub fn spawn(&self, command: Command) -> Result<Child, Error> {
        let (reply, answer) = mpsc::channel();
        let sender = lock(&self.requests).clone().ok_or(Error::KeeperGone)?;
        sender
            .send(SpawnRequest { command, reply })
            .map_err(|_| Error::KeeperGone)?;
        let spawned = answer.recv().map_err(|_| Error::KeeperGone)?;
        spawned.map_err(|source| Error::Io {
            path: PathBuf::from("<spawn>"),
            source,
        })
    }

    /// Ends the keeper thread. Children still running then receive SIGKILL from the kernel.
    pub fn shutdown(&self) {
        lock(&self.requests).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes the child receive SIGKILL when the spawning thread exits, and refuse to start when the parent is
/// already gone.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, parent: Pid) {
    // SAFETY: the closure runs in the forked child before exec. It only makes two raw syscalls through rustix
    // (prctl(PR_SET_PDEATHSIG) and getppid), which are async-signal-safe, and builds an io::Error from a raw
    // errno, which does not allocate. It touches no lock, no allocator and no state shared with the parent.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have exited between fork and prctl; the signal would then never come.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// A running etcd or kube-apiserver with its log file.
pub struct Process {
    name: &'static str,
    child: Mutex<Child>,
    log: PathBuf,
    tee: Vec<JoinHandle<()>>,
}

impl Process {
    /// Spawns `program args` through `keeper`, with stdout and stderr going to `log` (and also to our stderr
    /// when `attach` is set, like envtest's `KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT`).
    pub fn spawn(
        keeper: &Keeper,
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        attach: bool,
    ) -> Result<Self, Error> {
        let file = File::create(&log).map_err(|source| Error::Io {
            path: log.clone(),
            source,
        })?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).env_remove("KUBECONFIG");
        if attach {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            let err = file.try_clone().map_err(|source| Error::Io {
                path: log.clone(),
                source,
            })?;
            command.stdout(file.try_clone().map_err(|source| Error::Io {
                path: log.clone(),
                source,
            })?);
            command.stderr(err);
        }
        let mut child = keeper.spawn(command).map_err(|e| match e {
            Error::Io { source, .. } => Error::Spawn {
                name,
                program: program.to_path_buf(),
                source,
            },
            other => other,
        })?;
        let mut tee = Vec::new();
        if attach {
            let log_file = std::sync::Arc::new(Mutex::new(file));
            let outputs: [Option<Box<dyn Read + Send>>; 2] = [
                child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
                child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            ];
            for output in outputs.into_iter().flatten() {
                let log_file = log_file.clone();
                tee.push(thread::spawn(move || copy_lines(name, output, &log_file)));
            }
        }
        Ok(Self {
            name,
            child: Mutex::new(child),
            log,
            tee,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().ok().flatten()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// Whether the log says a port was taken, so that starting again with new ports can help.
    pub fn port_conflict(&self) -> bool {
        let Ok(file) = File::open(&self.log) else {
            return false;
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("address already in use"))
    }

    /// SIGTERM, then SIGKILL after a grace period; waits for the exit. Idempotent.
    pub fn stop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if child.try_wait().ok().flatten().is_none() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let terminated = pid.is_some_and(|pid| rustix::process::kill_process(pid, Signal::TERM).is_ok());
            let exited = terminated && crate::wait::exit(child, STOP_GRACE).ok().flatten().is_some();
            if !exited {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
        for tee in self.tee.drain(..) {
            let _ = tee.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn copy_lines(name: &str, output: Box<dyn Read + Send>, log: &Mutex<File>) {
    for line in BufReader::new(output).lines().map_while(Result::ok) {
        let _ = writeln!(lock(log), "{line}");
        eprintln!("[{name}] {line}");
    }
}

/// The last `n` lines of a file, or a note that it cannot be read.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("({} cannot be read)", path.display());
    };
    let mut last = VecDeque::with_capacity(n);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    Vec::from(last).join("\n")
}

/// `N` distinct ports that were free a moment ago: bind `127.0.0.1:0`, read the port, release it. Callers
/// retry with new ports when a process reports "address already in use".
pub fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    // Hold all listeners until every port is read, so the kernel hands out distinct ports.
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
        *port = listener
            .local_addr()
            .map_err(|source| Error::Io {
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
