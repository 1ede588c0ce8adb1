//! The scheduler: many green-thread processes on a few OS threads (M:N).
//!
//! Each worker thread runs one process at a time for a reduction budget (BEAM's
//! preemption), then puts it back at the end of its own FIFO queue, so a process that
//! never blocks still lets every other process on that worker run. New processes go to
//! a shared injector queue; a worker whose queue is empty steals from the injector and
//! from the other workers (crossbeam-deque). A worker with nothing to do sleeps on a
//! condition variable and uses no CPU; whoever makes work available wakes it, and a
//! worker re-checks the queues under the lock before it sleeps, so no wake-up is lost.
//!
//! Processes here are independent: messages, blocking waits and timers come with the
//! next pieces. A process that blocks (today only on a page fault, which nothing on a
//! single node can satisfy) ends with an error.

use crate::interp::{run, Outcome, RuntimeError};
use crate::process::Process;
use crate::runtime::{Host, Vm};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Pid = u64;

/// Where processes' console output goes; shared by all workers.
pub trait Console: Send + Sync {
    fn write(&self, pid: Pid, text: &str);
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitReason {
    Finished,
    Failed(RuntimeError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessExit {
    pub pid: Pid,
    pub reason: ExitReason,
    pub reductions: u64,
}

struct Shared {
    vm: Arc<Vm>,
    console: Arc<dyn Console>,
    budget: u32,
    injector: Injector<Box<Process>>,
    stealers: Vec<Stealer<Box<Process>>>,
    /// Workers asleep, also counted outside the lock for a cheap check when a worker
    /// queues work for itself.
    sleeping: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    live: AtomicUsize,
    exits: Mutex<Vec<ProcessExit>>,
    exited: Condvar,
}

/// A running set of worker threads.
pub struct Scheduler {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts `workers` threads (at least one).
    pub fn start(vm: Arc<Vm>, console: Arc<dyn Console>, workers: usize) -> Scheduler {
        let workers = workers.max(1);
        let budget = vm.config.budget;
        let queues: Vec<Worker<Box<Process>>> = (0..workers).map(|_| Worker::new_fifo()).collect();
        let shared = Arc::new(Shared {
            vm,
            console,
            budget,
            injector: Injector::new(),
            stealers: queues.iter().map(Worker::stealer).collect(),
            sleeping: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            exits: Mutex::new(Vec::new()),
            exited: Condvar::new(),
        });
        let threads = queues
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("tern-worker-{i}"))
                    .spawn(move || worker_loop(&s, &q, i))
                    .expect("the OS refused to start a worker thread")
            })
            .collect();
        Scheduler { shared, threads }
    }

    /// Adds a process to run.
    pub fn spawn(&self, p: Process) {
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        self.shared.injector.push(Box::new(p));
        let _guard = self.shared.sleep_lock.lock();
        self.shared.wake.notify_one();
    }

    /// Processes that have not ended yet.
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Waits until every process has ended, or `timeout` passes; true if they all ended.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut exits = self.shared.exits.lock();
        while self.live() > 0 {
            if self.shared.exited.wait_until(&mut exits, deadline).timed_out() {
                return self.live() == 0;
            }
        }
        true
    }

    /// The processes that have ended so far, in the order they ended.
    pub fn exits(&self) -> Vec<ProcessExit> {
        self.shared.exits.lock().clone()
    }

    /// Stops the workers; processes still running are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.sleep_lock.lock();
            self.shared.wake.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

struct ProcHost<'a> {
    console: &'a dyn Console,
    pid: Pid,
    start: Instant,
}

impl Host for ProcHost<'_> {
    fn console_write(&mut self, text: &str) {
        self.console.write(self.pid, text);
    }
    fn mono_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

fn find_work(s: &Shared, local: &Worker<Box<Process>>, me: usize) -> Option<Box<Process>> {
    if let Some(p) = local.pop() {
        return Some(p);
    }
    loop {
        let mut retry = false;
        match s.injector.steal_batch_and_pop(local) {
            Steal::Success(p) => return Some(p),
            Steal::Retry => retry = true,
            Steal::Empty => {}
        }
        for (i, st) in s.stealers.iter().enumerate() {
            if i == me {
                continue;
            }
            match st.steal() {
                Steal::Success(p) => return Some(p),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
        }
        if !retry {
            return None;
        }
    }
}

fn any_work(s: &Shared) -> bool {
    !s.injector.is_empty() || s.stealers.iter().any(|st| !st.is_empty())
}

fn worker_loop(s: &Shared, local: &Worker<Box<Process>>, me: usize) {
    let start = Instant::now();
    while !s.shutdown.load(Ordering::SeqCst) {
        let Some(mut p) = find_work(s, local, me) else {
            let mut guard = s.sleep_lock.lock();
            if s.shutdown.load(Ordering::SeqCst) {
                return;
            }
            // Work queued between `find_work` and taking the lock is seen here; work
            // queued after this check notifies under the lock we hold until we wait.
            if any_work(s) {
                continue;
            }
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            s.wake.wait(&mut guard);
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        let mut host = ProcHost { console: &*s.console, pid: p.pid, start };
        let reason = match run(&mut p, &s.vm, &mut host, s.budget) {
            Outcome::Yielded => {
                local.push(p);
                // New processes must not wait behind ones that never block.
                if !s.injector.is_empty() {
                    let _ = s.injector.steal_batch(local);
                }
                if s.sleeping.load(Ordering::SeqCst) > 0 && local.len() > 1 {
                    let _guard = s.sleep_lock.lock();
                    s.wake.notify_one();
                }
                continue;
            }
            Outcome::Finished(_) => ExitReason::Finished,
            Outcome::Failed(e) => ExitReason::Failed(e),
            Outcome::Blocked(b) => {
                ExitReason::Failed(RuntimeError { message: format!("blocked with nothing to wake it: {b:?}"), trace: vec![] })
            }
        };
        let exit = ProcessExit { pid: p.pid, reason, reductions: p.reductions };
        drop(p);
        let mut exits = s.exits.lock();
        exits.push(exit);
        s.live.fetch_sub(1, Ordering::SeqCst);
        s.exited.notify_all();
    }
}
