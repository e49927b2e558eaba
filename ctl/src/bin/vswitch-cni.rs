//! `vswitch-cni`: the CNI plugin of vswitch (see `ctl::cni`). Runtimes run it with the CNI
//! environment and the network configuration on stdin; run by hand it prints what it is.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use rscni_plugin::cni::Plugin;
use rscni_plugin::version::SpecVersion;

fn main() -> ExitCode {
    let versions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().filter_map(|v| v.parse::<SpecVersion>().ok()).collect();
    let plugin = Plugin::new(SpecVersion::CURRENT, versions).msg(concat!(
        "vswitch-cni ",
        env!("CARGO_PKG_VERSION"),
        ": attaches containers to vswitch networks through vswitchd"
    ));
    match plugin.run(&ctl::cni::VswitchCni) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
