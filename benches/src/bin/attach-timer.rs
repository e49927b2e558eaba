//! attach-timer: times vswitchd attaches (or detaches) through its HTTP API, one request after
//! the other on ONE kept-alive Unix-socket connection, so that no client process start-up is
//! counted: what is timed is the daemon's whole attach (HTTP, validation, netns thread, TAP,
//! netlink, datapath) plus one local round trip.
//!
//! ```text
//! attach-timer --socket PATH --network NET [--detach] [--times FILE] NETNS_NAME...
//! attach-timer --socket PATH --network NET [--detach] [--times FILE] --names FILE
//! ```
//! Each NETNS_NAME is attached as `/run/netns/NAME` with endpoint name NAME (`--detach`:
//! `DELETE /v1/networks/NET/endpoints/NAME`). `--names FILE` reads one name per line.
//! Prints one summary line of `key=value` pairs (n, total_s, mean_ms, median_ms, p99_ms, min_ms,
//! max_ms, first100_mean_ms, last100_mean_ms) and, with `--times`, writes each request's
//! milliseconds to FILE. Exits 1 on the first refused request. Only the standard library.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Args {
    socket: String,
    network: String,
    detach: bool,
    times: Option<String>,
    names: Vec<String>,
}

fn usage() -> ExitCode {
    eprintln!("usage: attach-timer --socket PATH --network NET [--detach] [--times FILE] (--names FILE | NETNS_NAME...)");
    ExitCode::from(2)
}

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |what: &str| it.next().ok_or_else(|| format!("{what} needs a value"));
        match arg.as_str() {
            "--socket" => a.socket = val("--socket")?,
            "--network" => a.network = val("--network")?,
            "--times" => a.times = Some(val("--times")?),
            "--detach" => a.detach = true,
            "--names" => {
                let file = val("--names")?;
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                a.names.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => a.names.push(s.to_string()),
        }
    }
    if a.socket.is_empty() || a.network.is_empty() || a.names.is_empty() {
        return Err("--socket, --network and at least one name are required".into());
    }
    Ok(a)
}

/// One HTTP/1.1 request on the kept-alive connection; returns (status, body).
#[derive(Debug)]
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(path: &str) -> std::io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { reader: BufReader::new(s.try_clone()?), writer: s })
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().map_err(|_| std::io::Error::other("bad content-length"))?;
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(std::io::Error::other("chunked replies are not handled"));
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("attach-timer: {e}");
            return usage();
        }
    };
    let mut conn = match Conn::open(&args.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("attach-timer: connect {}: {e}", args.socket);
            return ExitCode::from(3);
        }
    };
    let mut ms = Vec::with_capacity(args.names.len());
    let start = Instant::now();
    for name in &args.names {
        let (method, path, body, want) = if args.detach {
            ("DELETE", format!("/v1/networks/{}/endpoints/{name}", args.network), String::new(), 204)
        } else {
            let body = format!("{{\"netns\":{},\"name\":{}}}", json_str(&format!("/run/netns/{name}")), json_str(name));
            ("POST", format!("/v1/networks/{}/endpoints", args.network), body, 201)
        };
        let t = Instant::now();
        match conn.request(method, &path, &body) {
            Ok((status, _)) if status == want => {}
            Ok((status, reply)) => {
                eprintln!("attach-timer: {method} {path} ({name}): HTTP {status}: {}", reply.trim());
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("attach-timer: {method} {path}: {e}");
                return ExitCode::from(1);
            }
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    if let Some(file) = &args.times {
        let text: String = ms.iter().map(|m| format!("{m:.4}\n")).collect();
        if let Err(e) = std::fs::write(file, text) {
            eprintln!("attach-timer: {file}: {e}");
        }
    }
    let n = ms.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (first, last) = (mean(&ms[..n.min(100)]), mean(&ms[n.saturating_sub(100)..]));
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((n as f64 - 1.0) * p).round() as usize];
    println!(
        "n={n} total_s={total:.4} mean_ms={:.4} median_ms={:.4} p99_ms={:.4} min_ms={:.4} max_ms={:.4} first100_mean_ms={first:.4} last100_mean_ms={last:.4}",
        mean(&ms),
        pct(0.5),
        pct(0.99),
        sorted[0],
        sorted[n - 1],
    );
    ExitCode::SUCCESS
}
