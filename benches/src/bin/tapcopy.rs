//! tapcopy: the floor a userspace switch is measured against. It creates two TAPs opened the way
//! vswitchd opens them (IFF_VNET_HDR, checksum/TSO/USO offloads) and copies every frame read
//! from one to the other, with the same shape as vswitchd's datapath thread (one thread,
//! edge-triggered epoll, each ready TAP drained up to 64 frames, one `write` per frame) but no
//! switching at all: no MAC table, no counters, no checks.
//!
//! ```text
//! tapcopy TAP_A TAP_B      # runs until killed; the TAPs go when it exits
//! ```
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
    let names: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = names.as_slice() else {
        eprintln!("usage: tapcopy TAP_A TAP_B");
        return ExitCode::from(2);
    };
    match run(a, b) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapcopy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(name: &str) -> Result<File, String> {
    let fd = vswitch::sys::tap::open_tun().map_err(|e| format!("/dev/net/tun: {e}"))?;
    let tap = vswitch::sys::tap::create(fd, name, Some(true)).map_err(|e| format!("{name}: {e}"))?;
    eprintln!("tapcopy: {name} offloads {:?}", tap.offloads.names());
    Ok(File::from(tap.fd))
}

fn run(a: &str, b: &str) -> Result<(), String> {
    let taps = [open(a)?, open(b)?];
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
