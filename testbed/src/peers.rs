//! Peers for tests of egress and published ports: a "host" namespace with a neighbour, and
//! small TCP/UDP servers and clients (python3) that report the addresses they see.

use std::process::{Child, Output};
use std::time::Duration;

use crate::{eventually, run_ok, unique, Netns, UserContainer};

/// Something commands run in: a namespace of root's, or a rootless container.
pub trait Runs {
    fn run(&self, cmd: &[&str]) -> Output;
    fn spawn(&self, cmd: &[&str]) -> Child;
}

impl Runs for Netns {
    fn run(&self, cmd: &[&str]) -> Output {
        self.exec(cmd)
    }
    fn spawn(&self, cmd: &[&str]) -> Child {
        Netns::spawn(self, cmd)
    }
}

impl Runs for UserContainer {
    fn run(&self, cmd: &[&str]) -> Output {
        self.exec(cmd)
    }
    fn spawn(&self, cmd: &[&str]) -> Child {
        UserContainer::spawn(self, cmd)
    }
}

/// A host namespace H (where vswitchd runs) joined by a veth to an outside namespace O.
#[derive(Debug)]
pub struct Hosts {
    pub h: Netns,
    pub o: Netns,
    /// H's address on the veth, and O's.
    pub h_ip: String,
    pub o_ip: String,
}

pub fn hosts(octet: u8) -> Hosts {
    let (h, o) = (Netns::new("veh-"), Netns::new("veo-"));
    let (hv, ov) = (unique("veH"), unique("veO"));
    let (hv, ov) = (&hv[..hv.len().min(15)], &ov[..ov.len().min(15)]);
    run_ok("ip", &["link", "add", hv, "type", "veth", "peer", "name", ov]);
    run_ok("ip", &["link", "set", hv, "netns", &h.name]);
    run_ok("ip", &["link", "set", ov, "netns", &o.name]);
    let (h_ip, o_ip) = (format!("198.18.{octet}.2"), format!("198.18.{octet}.1"));
    h.exec_ok(&["ip", "addr", "add", &format!("{h_ip}/24"), "dev", hv]);
    h.exec_ok(&["ip", "link", "set", hv, "up"]);
    o.exec_ok(&["ip", "addr", "add", &format!("{o_ip}/24"), "dev", ov]);
    o.exec_ok(&["ip", "link", "set", ov, "up"]);
    // Unprivileged ICMP sockets for the daemon's egress pings (per namespace).
    h.exec_ok(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]);
    Hosts { h, o, h_ip, o_ip }
}

/// Background servers, killed when dropped.
#[derive(Debug)]
pub struct Servers(pub Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP server on ADDR:PORT that answers every connection with "<tag> <peer ip>:<peer port>".
pub fn tcp_server(ns: &impl Runs, addr: &str, port: u16, tag: &str) -> Child {
    let code = format!(
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{addr}',{port}));s.listen(64)\n\
         while True:\n c,a=s.accept();c.sendall(('{tag} %s:%d\\n'%a).encode());c.close()"
    );
    ns.spawn(&["python3", "-c", &code])
}

/// A UDP server on ADDR:PORT that answers "<tag> <peer ip>:<peer port> <payload>".
pub fn udp_server(ns: &impl Runs, addr: &str, port: u16, tag: &str) -> Child {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('{addr}',{port}))\n\
         while True:\n d,a=s.recvfrom(65535);s.sendto(('{tag} %s:%d '%a).encode()+d,a)"
    );
    ns.spawn(&["python3", "-c", &code])
}

/// Connects to ADDR:PORT from `ns` and returns what the server said ("" on failure).
pub fn tcp_get(ns: &impl Runs, addr: &str, port: u16) -> String {
    let code = format!(
        "import socket\ntry:\n s=socket.create_connection(('{addr}',{port}),timeout=3);print(s.recv(200).decode().strip())\nexcept Exception as e:\n print('ERR',type(e).__name__)"
    );
    String::from_utf8_lossy(&ns.run(&["python3", "-c", &code]).stdout).trim().to_string()
}

/// Sends one datagram from `ns` to ADDR:PORT and returns the answer ("" on timeout).
pub fn udp_ask(ns: &impl Runs, addr: &str, port: u16, what: &str) -> String {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\ntry:\n s.sendto(b'{what}',('{addr}',{port}));print(s.recvfrom(1000)[0].decode())\nexcept Exception as e:\n print('ERR',type(e).__name__)"
    );
    String::from_utf8_lossy(&ns.run(&["python3", "-c", &code]).stdout).trim().to_string()
}

pub fn wait_listening(ns: &impl Runs, port: u16) {
    let ok = eventually(Duration::from_secs(5), || {
        let out = ns.run(&["ss", "-Htuln", &format!("sport = :{port}")]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    });
    assert!(ok, "nothing listens on port {port}");
}
