//! Handing freed memory back to the system.
//!
//! A connect storm makes a burst of short-lived allocations: the roster serialized for every
//! connecting socket and a `user connected` frame for every other socket. glibc's allocator
//! keeps what such a burst freed inside its arenas, where it still counts as the process's
//! memory. How much it keeps depends on how the burst interleaved. At 1,000 idle users the
//! same run left 49–103 KB per connection, against ~41 KB that was live.
//!
//! `malloc_trim` returns every whole free page in every arena, but it walks every free chunk
//! and holds each arena's lock while it does. On a fragmented heap of a few hundred MB that
//! took 60–80 ms each time, even with nothing left to return; after a 1,000-user storm, 4 ms.
//! So it runs only after the resident size has grown by [`GROWTH`] since the last trim, and
//! only in intervals in which the server was quiet (under a tenth of a core). It repeats in
//! the following quiet intervals, because a burst's tail frees more after the first trim, and
//! stops once a trim returns less than [`SETTLED`]. It never runs under load, and never again
//! while nothing changes.

use std::time::Duration;

// What the process looked like at one moment: resident bytes, CPU time used so far.
use crate::process::Usage as Sample;

/// How much the resident size must grow past what the last trim left to start trimming.
const GROWTH: u64 = 16 << 20;
/// A trim that returns less than this ends a round of trims.
const SETTLED: u64 = 1 << 20;

/// Checks every `every` whether to trim, until the task is aborted. Zero turns it off, and so
/// does a platform without glibc and `/proc`.
pub async fn trim_loop(every: Duration) {
    if every.is_zero() || !TRIM_SUPPORTED {
        return;
    }
    let Some(mut last) = Sample::now() else {
        return;
    };
    let mut policy = Policy::new(last.resident);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(now) = Sample::now() else {
            return;
        };
        let trim_now = policy.tick(&last, &now, every);
        last = now;
        if !trim_now {
            continue;
        }
        // The trim holds the allocator's locks; on a blocking thread it holds up no socket's
        // task.
        let started = std::time::Instant::now();
        let Ok(after) = tokio::task::spawn_blocking(trim_and_sample).await else {
            return;
        };
        let Some(after) = after else {
            return;
        };
        tracing::debug!(
            before_mib = now.resident >> 20,
            after_mib = after.resident >> 20,
            took_ms = started.elapsed().as_millis() as u64,
            "returned freed memory to the system"
        );
        policy.trimmed(now.resident, after.resident);
        last = after;
    }
}

/// When to trim: see the module documentation.
#[derive(Debug)]
struct Policy {
    /// The resident size the last trim left (or lower, if it shrank by itself since).
    floor: u64,
    /// Grown past the floor; trimming until a trim returns little.
    pending: bool,
}

impl Policy {
    fn new(resident: u64) -> Self {
        Self {
            floor: resident,
            pending: false,
        }
    }

    /// Whether to trim now, given the samples at the start and the end of the last interval.
    fn tick(&mut self, last: &Sample, now: &Sample, every: Duration) -> bool {
        if now.resident < self.floor {
            self.floor = now.resident;
        }
        if now.resident - self.floor >= GROWTH {
            self.pending = true;
        }
        let quiet = now.cpu.saturating_sub(last.cpu) < every / 10;
        self.pending && quiet
    }

    fn trimmed(&mut self, before: u64, after: u64) {
        self.floor = after;
        if before.saturating_sub(after) < SETTLED {
            self.pending = false;
        }
    }
}

/// glibc on Linux: the allocator with `malloc_trim`, and `/proc` to watch the process by.
const TRIM_SUPPORTED: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

fn trim_and_sample() -> Option<Sample> {
    trim();
    Sample::now()
}

/// Returns whether any memory went back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the workspace's one exception (Cargo.toml, [workspace.lints])
fn trim() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim only takes the allocator's own locks and may be called from any
    // thread at any time; a pad of 0 keeps nothing beyond what is in use.
    unsafe { malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sample(resident_mib: u64, cpu_ms: u64) -> Sample {
        Sample {
            resident: resident_mib * MIB,
            cpu: Duration::from_millis(cpu_ms),
        }
    }

    #[test]
    fn trims_after_growth_when_quiet_until_a_trim_returns_little() {
        let every = Duration::from_secs(1);
        let mut policy = Policy::new(100 * MIB);
        // Within 16 MiB of the floor: nothing worth a walk, quiet or not.
        assert!(!policy.tick(&sample(110, 0), &sample(110, 10), every));
        // Grown by 50 MiB under load (600 ms of CPU in the second): wait.
        assert!(!policy.tick(&sample(150, 10), &sample(150, 610), every));
        // Quiet now: trim. It returned 40 MiB, so the round goes on.
        assert!(policy.tick(&sample(150, 610), &sample(150, 630), every));
        policy.trimmed(150 * MIB, 110 * MIB);
        // The burst's tail freed more since: the next quiet interval trims again, although
        // nothing grew.
        assert!(policy.tick(&sample(110, 630), &sample(110, 640), every));
        policy.trimmed(110 * MIB, 104 * MIB);
        assert!(policy.tick(&sample(104, 640), &sample(104, 650), every));
        // Under 1 MiB returned: the round ends, and quiet intervals no longer trim.
        policy.trimmed(104 * MIB, 104 * MIB);
        assert!(!policy.tick(&sample(104, 650), &sample(104, 660), every));
        assert!(!policy.tick(&sample(104, 660), &sample(104, 670), every));
        // Shrinking by itself lowers the floor; growth is measured from there.
        assert!(!policy.tick(&sample(104, 670), &sample(90, 680), every));
        assert!(policy.tick(&sample(90, 680), &sample(107, 690), every));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_hands_back_what_a_burst_of_small_allocations_freed() {
        // 64 MiB in 32 KiB blocks (below glibc's mmap threshold), every other one freed: the
        // free half sits between live blocks, where only a trim can return it.
        let mut blocks: Vec<Vec<u8>> = (0..2048).map(|_| vec![1u8; 32 * 1024]).collect();
        let mut kept = Vec::with_capacity(blocks.len() / 2);
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 2 == 0 {
                kept.push(block);
            }
        }
        let before = Sample::now().unwrap().resident;
        assert!(trim(), "there was free memory to hand back");
        let after = Sample::now().unwrap().resident;
        assert!(
            before.saturating_sub(after) > 16 * MIB,
            "RSS {before} -> {after} bytes"
        );
        drop(kept);
    }
}
