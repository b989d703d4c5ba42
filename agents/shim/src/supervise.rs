//! Runs the agent as a child process: forwards termination signals to it,
//! reaps it (and, as PID 1 in a container, any orphan reparented to the
//! shim), and never lets it outlive the shim.

use std::{io, process::Command, time::Duration};

use nix::{
    errno::Errno,
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::{
    signal::unix::{Signal as SignalStream, SignalKind, signal},
    sync::mpsc,
};

/// Signals the shim passes on to the agent. As PID 1 the kernel applies no
/// default action to them, so without forwarding a container would ignore
/// `docker stop` until the engine's SIGKILL.
const FORWARDED: [Signal; 6] =
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// A safety net in case a SIGCHLD is coalesced or lost.
const REAP_POLL: Duration = Duration::from_millis(500);

/// Signal handlers installed before the child starts, so a child that exits
/// or a signal that arrives at once is not missed.
pub struct Signals {
    child: SignalStream,
    forwarded: mpsc::UnboundedReceiver<Signal>,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        let child = signal(SignalKind::child())?;
        let (sender, forwarded) = mpsc::unbounded_channel();
        for forward in FORWARDED {
            let mut stream = signal(SignalKind::from_raw(forward as i32))?;
            let sender = sender.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if sender.send(forward).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self { child, forwarded })
    }
}

/// The running agent. Killed and reaped on drop unless it already exited.
pub struct Child {
    pid: Pid,
    reaped: bool,
}

impl Child {
    /// Starts `program` with the shim's environment plus `PORT`, sharing the
    /// shim's stdin, stdout and stderr.
    pub fn spawn(program: &str, args: &[String], port: u16) -> io::Result<Self> {
        let child = Command::new(program).args(args).env("PORT", port.to_string()).spawn()?;
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        // The std handle is dropped without waiting: this module reaps by pid.
        Ok(Self { pid: Pid::from_raw(pid), reaped: false })
    }

    /// Forwards signals until the agent exits, then returns the code the
    /// shim should exit with: the agent's, or 128 + the signal that killed it.
    pub async fn wait(mut self, mut signals: Signals) -> io::Result<i32> {
        let mut poll = tokio::time::interval(REAP_POLL);
        loop {
            if let Some(code) = self.reap()? {
                return Ok(code);
            }
            tokio::select! {
                Some(forward) = signals.forwarded.recv() => {
                    tracing::info!(signal = %forward, "forwarding signal to the agent");
                    // ESRCH: it exited meanwhile; the next reap sees it.
                    let _ = kill(self.pid, forward);
                }
                _ = signals.child.recv() => {}
                _ = poll.tick() => {}
            }
        }
    }

    /// Reaps every exited child; the agent's exit code once it has exited.
    fn reap(&mut self) -> io::Result<Option<i32>> {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.pid => {
                    self.reaped = true;
                    return Ok(Some(code));
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.pid => {
                    self.reaped = true;
                    return Ok(Some(128 + signal as i32));
                }
                Ok(WaitStatus::StillAlive) => return Ok(None),
                // An orphan reaped, or a state change that is not an exit.
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
