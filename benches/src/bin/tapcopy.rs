//! tapcopy: the floor a userspace switch is measured against. It creates two TAPs opened the way
//! vswitchd opens them (IFF_VNET_HDR, checksum/TSO/USO offloads) and copies every frame read
//! from one to the other, with the same shape as vswitchd's datapath thread (one thread,
//! edge-triggered epoll, each ready TAP drained up to 64 frames, one `write` per frame) but no
//! switching at all: no MAC table, no counters, no checks.
//!
//! ```text
//! tapcopy [--queues N] TAP_A TAP_B      # runs until killed; the TAPs go when it exits
//! ```
//! With `--queues N` both TAPs are multi-queue (IFF_MULTI_QUEUE) with N queues each, and N
//! threads each copy between queue k of A and queue k of B (the kernel steers a flow to the
//! queue that last wrote it, so each flow stays on one thread).
//! `benches/e2e-datapath.sh` starts it in a namespace of its own and moves the two TAPs into
//! the containers, as it does for vde_switch.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

const BUDGET: usize = 64;
const BUF_LEN: usize = 12 + 14 + 4 + 65535;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut queues = 1usize;
    if args.first().map(String::as_str) == Some("--queues") && args.len() >= 2 {
        queues = args[1].parse().unwrap_or(0);
        args.drain(..2);
    }
    let ([a, b], 1..=16) = (args.as_slice(), queues) else {
        eprintln!("usage: tapcopy [--queues N] TAP_A TAP_B   (N from 1 to 16)");
        return ExitCode::from(2);
    };
    match run(a, b, queues) {
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

fn run(a: &str, b: &str, queues: usize) -> Result<(), String> {
    let mq = queues > 1;
    let mut pairs = Vec::new();
    for q in 0..queues {
        pairs.push([open(a, q == 0, mq)?, open(b, q == 0, mq)?]);
    }
    let last = pairs.pop().ok_or("no queue")?;
    let threads: Vec<_> = pairs.into_iter().map(|taps| std::thread::spawn(move || copy(&taps))).collect();
    let res = copy(&last);
    drop(threads);
    res
}

/// Copies frames both ways between two TAP queues until an error.
fn copy(taps: &[File; 2]) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    for (i, t) in taps.iter().enumerate() {
        poll.registry().register(&mut SourceFd(&t.as_raw_fd()), Token(i), Interest::READABLE).map_err(|e| e.to_string())?;
    }
    let mut buf = vec![0u8; BUF_LEN];
    let mut events = Events::with_capacity(8);
    // Both start ready: frames may have queued before the first wait.
    let mut ready = [true, true];
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
        for from in 0..2 {
            if !ready[from] {
                continue;
            }
            let mut n = 0;
            while n < BUDGET {
                match (&taps[from]).read(&mut buf) {
                    Ok(len) => {
                        // A full queue on the other side drops the frame, like a NIC (and vswitchd).
                        let _ = (&taps[1 - from]).write(&buf[..len]);
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            // Stopped at the budget: still readable (epoll is edge-triggered).
            ready[from] = n == BUDGET;
        }
    }
}
