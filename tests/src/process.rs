//! Long-running child processes that can never outlive the test process.
//!
//! Every child gets its own process group (so a whole group can be signalled
//! and a terminal's Ctrl-C reaches only the harness, which then tears down in
//! order) and `PR_SET_DEATHSIG` (so the kernel kills it if the test process
//! dies without running destructors, e.g. on SIGKILL or `abort`).

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a child gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running child process whose output goes to a log file. Dropping it
/// terminates it (SIGTERM, then SIGKILL) and reaps it.
#[derive(Debug)]
pub struct ManagedChild {
    name: String,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl ManagedChild {
    /// Spawns `program args...` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// [`ManagedChild::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating log {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating log handle {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe syscalls (prctl, getppid); it allocates nothing.
        // This is the only way to tie a child's lifetime to ours: without it a
        // test killed by SIGKILL would leave etcd/kube-apiserver running.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = spawn_on_keeper_thread(cmd)
            .with_context(|| format!("spawning {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
            exited: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Errors if the process has exited, with the tail of its log.
    pub fn check_running(&mut self) -> Result<()> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.name))?;
        }
        match self.exited {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited unexpectedly ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 40)
            ),
        }
    }

    /// SIGKILLs the process group at once, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
    }

    /// Sends SIGTERM to the process group (no-op if already reaped).
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `grace` for the process to exit after `terminate`, then
    /// SIGKILLs the group and reaps it. Returns true if SIGKILL was needed.
    pub fn wait_or_kill(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.exited.is_none() && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        // Also reaches grandchildren left in the group by an exited leader.
        self.signal(libc::SIGKILL);
        let killed = self.exited.is_none();
        if killed && let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
        killed
    }

    fn signal(&self, sig: libc::c_int) {
        // The group id equals the child's pid (process_group(0)); it can't be
        // reused while any member is alive, so a stale id hits nothing.
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), sig);
        }
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.terminate();
            self.wait_or_kill(TERM_GRACE);
        }
    }
}

/// Stops children: everything but the first-started one (the store the
/// others depend on: etcd) in parallel, then the first. Stopping etcd at the
/// same time makes kube-apiserver's graceful shutdown hang on storage.
pub fn stop_all(children: &mut Vec<ManagedChild>) {
    while !children.is_empty() {
        let wave: Vec<ManagedChild> = if children.len() > 1 {
            children.drain(1..).collect()
        } else {
            std::mem::take(children)
        };
        stop_wave(wave);
    }
}

fn stop_wave(mut wave: Vec<ManagedChild>) {
    for c in wave.iter_mut().rev() {
        c.terminate();
    }
    let deadline = Instant::now() + TERM_GRACE;
    for c in wave.iter_mut().rev() {
        let left = deadline.saturating_duration_since(Instant::now());
        if c.wait_or_kill(left) {
            eprintln!(
                "harness: {} (pid {}) ignored SIGTERM, killed",
                c.name,
                c.pid()
            );
        }
    }
}

/// The last `n` lines of a log file (or a note that it can't be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return format!("<cannot read {}>", path.display());
    };
    let mut ring = std::collections::VecDeque::with_capacity(n);
    for line in BufReader::new(f).lines().map_while(|l| l.ok()) {
        if ring.len() == n {
            ring.pop_front();
        }
        ring.push_back(line);
    }
    ring.into_iter().collect::<Vec<_>>().join("\n")
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// PR_SET_DEATHSIG fires when the *thread* that forked the child exits, not
/// the process. Test threads and tokio blocking threads come and go (a
/// cluster shared by several tests would die with the first test's thread),
/// so every child is forked from one thread that lives as long as the process.
fn spawn_on_keeper_thread(cmd: Command) -> io::Result<Child> {
    static KEEPER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);
    let (reply_tx, reply_rx) = mpsc::channel();
    let mut keeper = KEEPER
        .lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?;
    let tx = match keeper.as_ref() {
        Some(tx) => tx.clone(),
        None => keeper.insert(start_keeper_thread()?).clone(),
    };
    drop(keeper);
    tx.send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

fn start_keeper_thread() -> io::Result<mpsc::Sender<SpawnJob>> {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new()
        .name("harness-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        })?;
    Ok(tx)
}
