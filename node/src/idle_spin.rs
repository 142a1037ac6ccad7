//! Spin before parking: an opt-in latency/CPU trade for the tokio workers (`node.idle_spin_us`).
//!
//! A proxy wakes up twice per request: when the request arrives and when the upstream answers. Between
//! the two it has nothing to do, so its worker parks in `epoll_wait` and the CPU goes idle. On VMs
//! (Firecracker, most clouds) an idle vCPU halts, and waking a halted vCPU costs an inter-processor
//! interrupt through the hypervisor: tens of microseconds per wake-up, on the critical path. Go's
//! scheduler, Seastar and DPDK poll for a while before they sleep for the same reason.
//!
//! With a spin budget, a worker that is about to park first polls the runtime's own epoll instance
//! (`poll(2)` with a zero timeout: it reports readiness without consuming events, so tokio still sees
//! every one) until something is ready or the budget is spent, and only then parks. An upstream answer that
//! comes back within the budget finds the worker awake. The cost is CPU: up to one budget per park, which
//! is at most the busy time between requests at low load and nothing at saturation (workers rarely park).
//! Timers may fire up to one budget late while a worker spins; the gateway's timers are milliseconds and
//! up, so keep the budget in the tens to hundreds of microseconds.
//!
//! The runtime's epoll descriptor is found by its absence: the `eventpoll` descriptors open before the
//! runtime is built are listed ([`EpollCensus::take`]), and the one that appears with the runtime is
//! duplicated with `pidfd_getfd(2)` ([`adopt_runtime_epoll`]), which keeps the crate free of `unsafe`.
//! Without one (not Linux, an older kernel, or an ambiguous census) spinning stays off and says why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

static SPIN_NANOS: AtomicU64 = AtomicU64::new(0);
/// Parks whose spin ended because an event was ready (the wake-up it saved), and those that used up the
/// budget and parked anyway.
static SPINS_WOKEN: AtomicU64 = AtomicU64::new(0);
static SPINS_EXPIRED: AtomicU64 = AtomicU64::new(0);

#[cfg(target_os = "linux")]
static RUNTIME_EPOLL: OnceLock<std::os::fd::OwnedFd> = OnceLock::new();
#[cfg(not(target_os = "linux"))]
static RUNTIME_EPOLL: OnceLock<()> = OnceLock::new();

/// Sets the spin budget (zero turns spinning off). Effective at once on every worker.
pub fn set_budget(budget: Duration) {
    SPIN_NANOS.store(budget.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    if !budget.is_zero() && RUNTIME_EPOLL.get().is_none() {
        tracing::warn!(
            "node.idle_spin_us is set but this process has no runtime epoll descriptor to poll; workers will not spin"
        );
    }
}

/// Whether workers spin: a budget is set and the runtime's epoll descriptor is known.
pub fn active() -> bool {
    SPIN_NANOS.load(Ordering::Relaxed) > 0 && RUNTIME_EPOLL.get().is_some()
}

/// `(woken, expired)` spin counts since start, for `/metrics`.
pub fn counts() -> (u64, u64) {
    (SPINS_WOKEN.load(Ordering::Relaxed), SPINS_EXPIRED.load(Ordering::Relaxed))
}

/// The `on_thread_park` hook: spin while nothing is ready, up to the budget. Returns at once when
/// spinning is off.
pub fn on_park() {
    let nanos = SPIN_NANOS.load(Ordering::Relaxed);
    if nanos > 0 {
        spin(nanos);
    }
}

#[cfg(target_os = "linux")]
fn spin(nanos: u64) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let Some(epoll) = RUNTIME_EPOLL.get() else {
        return;
    };
    let started = Instant::now();
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    loop {
        let mut fds = [PollFd::new(epoll, PollFlags::IN)];
        match poll(&mut fds, Some(&zero)) {
            Ok(0) => {}
            Ok(_) if fds[0].revents().contains(PollFlags::IN) => {
                SPINS_WOKEN.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // An error or a broken descriptor: parking is the safe thing to do.
            _ => return,
        }
        if started.elapsed().as_nanos() >= u128::from(nanos) {
            SPINS_EXPIRED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        std::hint::spin_loop();
    }
}

#[cfg(not(target_os = "linux"))]
fn spin(_nanos: u64) {}

/// The `eventpoll` descriptors open in this process at one moment.
#[derive(Debug, Default)]
pub struct EpollCensus(Vec<i32>);

impl EpollCensus {
    pub fn take() -> EpollCensus {
        EpollCensus(eventpoll_fds())
    }
}

fn eventpoll_fds() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
        })
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse().ok()))
        .collect()
}

/// Finds the epoll descriptor that appeared since `before` (the runtime's I/O driver) and keeps a
/// duplicate of it for [`on_park`]. Call right after building the runtime, on the thread that built it:
/// nothing but the build may have opened one in between. (tokio's I/O driver holds two descriptors for its
/// one epoll instance, the poller's and a clone for its registry, so any new one will do.)
pub fn adopt_runtime_epoll(before: &EpollCensus) -> Result<(), String> {
    let new: Vec<i32> = eventpoll_fds().into_iter().filter(|fd| !before.0.contains(fd)).collect();
    let Some(&fd) = new.iter().min() else {
        return Err("no epoll descriptor appeared while building the runtime".to_owned());
    };
    adopt(fd)
}

#[cfg(target_os = "linux")]
fn adopt(fd: i32) -> Result<(), String> {
    use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};
    let pidfd = pidfd_open(getpid(), PidfdFlags::empty()).map_err(|err| format!("pidfd_open: {err}"))?;
    let epoll = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|err| format!("pidfd_getfd: {err}"))?;
    RUNTIME_EPOLL.set(epoll).map_err(|_| "the runtime epoll descriptor was already adopted".to_owned())
}

#[cfg(not(target_os = "linux"))]
fn adopt(_fd: i32) -> Result<(), String> {
    Err("spinning before parking is only implemented on Linux".to_owned())
}
