//! tapcopy: the floor a userspace switch is measured against. It creates TAPs opened the way
//! vswitchd opens them (IFF_VNET_HDR, checksum/TSO/USO offloads) and copies every frame read
//! from one to its partner, with the same shape as vswitchd's datapath thread (one thread,
//! edge-triggered epoll, each ready TAP drained up to vswitchd's budget of 64 frames or 256 KiB,
//! one `write` per frame) but no
//! switching at all: no MAC table, no counters, no checks.
//!
//! ```text
//! tapcopy [--queues N] TAP_A TAP_B [TAP_C TAP_D ...]   # runs until killed; the TAPs go with it
//! ```
//! TAPs are partnered in the order given (A with B, C with D, ...) and one thread copies for
//! every pair, as one vswitchd worker serves every port: a second pair measures what a bulk
//! flow through the same loop costs another pair's round trips.
//! With `--queues N` (one pair only) both TAPs are multi-queue (IFF_MULTI_QUEUE) with N queues
//! each, and N threads each copy between queue k of A and queue k of B (the kernel steers a flow
//! to the queue that last wrote it, so each flow stays on one thread).
//! `benches/e2e-datapath.sh` starts it in a namespace of its own and moves the two TAPs into
//! the containers, as it does for vde_switch.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use vswitch::datapath::{BUDGET, BUF_LEN, BYTE_BUDGET};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut queues = 1usize;
    if args.first().map(String::as_str) == Some("--queues") && args.len() >= 2 {
        queues = args[1].parse().unwrap_or(0);
        args.drain(..2);
    }
    let pairs_ok = !args.is_empty() && args.len() % 2 == 0 && args.len() <= 16;
    if !pairs_ok || !(1..=16).contains(&queues) || (queues > 1 && args.len() != 2) {
        eprintln!("usage: tapcopy [--queues N] TAP_A TAP_B [TAP_C TAP_D ...]   (N from 1 to 16, one pair with --queues)");
        return ExitCode::from(2);
    }
    match run(&args, queues) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapcopy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(name: &str, first: bool, multi_queue: bool) -> Result<File, String> {
    let fd = vswitch::sys::tap::open_tun().map_err(|e| format!("/dev/net/tun: {e}"))?;
    let tap = vswitch::sys::tap::open_queue(fd, name, Some(true), first, multi_queue).map_err(|e| format!("{name}: {e}"))?;
    if first {
        eprintln!("tapcopy: {name} offloads {:?}", tap.offloads.names());
    }
    Ok(File::from(tap.fd))
}

fn run(names: &[String], queues: usize) -> Result<(), String> {
    let mq = queues > 1;
    // One set of TAP queues per thread: queue q of every TAP.
    let mut sets = Vec::new();
    for q in 0..queues {
        sets.push(names.iter().map(|n| open(n, q == 0, mq)).collect::<Result<Vec<File>, String>>()?);
    }
    let last = sets.pop().ok_or("no queue")?;
    let threads: Vec<_> = sets.into_iter().map(|taps| std::thread::spawn(move || copy(&taps))).collect();
    let res = copy(&last);
    drop(threads);
    res
}

/// Copies frames both ways between TAP `2k` and TAP `2k + 1`, for every k, until an error.
fn copy(taps: &[File]) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    for (i, t) in taps.iter().enumerate() {
        poll.registry().register(&mut SourceFd(&t.as_raw_fd()), Token(i), Interest::READABLE).map_err(|e| e.to_string())?;
    }
    let mut buf = vec![0u8; BUF_LEN];
    let mut events = Events::with_capacity(16);
    // All start ready: frames may have queued before the first wait.
    let mut ready = vec![true; taps.len()];
    loop {
        if !ready.contains(&true) {
            match poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
            for ev in events.iter() {
                ready[ev.token().0] = true;
            }
        }
        for from in 0..taps.len() {
            if !ready[from] {
                continue;
            }
            let (mut n, mut bytes) = (0, 0);
            while n < BUDGET && bytes < BYTE_BUDGET {
                match (&taps[from]).read(&mut buf) {
                    Ok(len) => {
                        // A full queue on the other side drops the frame, like a NIC (and vswitchd).
                        let _ = (&taps[from ^ 1]).write(&buf[..len]);
                        n += 1;
                        bytes += len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // Stopped at the budget: still readable (epoll is edge-triggered).
            ready[from] = n == BUDGET || bytes >= BYTE_BUDGET;
        }
    }
}
