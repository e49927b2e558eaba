//! A capture filter in pcap-filter(7) syntax (tcpdump's), compiled by libpcap to a BPF program
//! for Ethernet frames and run on frames in memory. Here because sharing the compiled program
//! between datapath threads takes an `unsafe impl Sync`.

/// A compiled filter. A captured port's frame is offered to it before anything is copied, so a
/// narrow filter on a busy port costs the program's run per frame and no copies.
pub struct Filter {
    expr: String,
    program: pcap::BpfProgram,
}

impl Filter {
    /// Compiles `expr`.
    ///
    /// # Errors
    /// libpcap's message for an expression it cannot compile.
    pub fn compile(expr: &str) -> Result<Filter, String> {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| e.to_string())?;
        let program = dead.compile(expr, true).map_err(|e| match e {
            pcap::Error::PcapError(m) => m,
            e => e.to_string(),
        })?;
        Ok(Filter { expr: expr.to_string(), program })
    }

    /// Whether the Ethernet frame `frame` passes.
    pub fn matches(&self, frame: &[u8]) -> bool {
        self.program.filter(frame)
    }
}

// SAFETY: after compilation the program is only read: `matches` runs libpcap's
// pcap_offline_filter, which interprets the instructions without writing to them or to any
// shared state, so several datapath threads may run it at once. It is freed once, on drop.
unsafe impl Sync for Filter {}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("expr", &self.expr).finish_non_exhaustive()
    }
}
