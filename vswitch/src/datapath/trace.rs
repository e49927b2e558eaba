//! `vswitchctl trace` on the datapath thread: a built frame through the switch core's
//! read-only [`Switch::explain`](crate::switch::Switch::explain), then through what the
//! gateway, DNS and egress would do with it, each without learning, counting or sending.

use std::collections::HashMap;

use super::{Engine, PortIo, VNET_HDR_LEN};
use crate::api::TraceStep;
use crate::fdb::Learn;
use crate::gateway::Outcome;
use crate::switch::{Lookup, Verdict};
use crate::types::{Mac, PortId};

/// What the trace found: the steps, then the verdict and a drop reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    pub steps: Vec<TraceStep>,
    pub verdict: &'static str,
    pub drop_reason: Option<String>,
}

fn step(step: &str, result: &str, detail: String) -> TraceStep {
    TraceStep { step: step.into(), result: result.into(), detail }
}

impl Engine {
    /// Runs `frame` (no virtio header) from `ingress` through every decision, changing
    /// nothing. `names` gives ports their names for the output.
    pub fn trace(&mut self, ingress: PortId, frame: &[u8], names: &HashMap<PortId, String>) -> Traced {
        let name = |p: PortId| names.get(&p).cloned().unwrap_or_else(|| format!("port {p}"));
        let mut steps = Vec::new();
        let now = self.now();
        let Some(e) = self.switch.explain(now, ingress, frame, false) else {
            steps.push(step("checks", "dropped", format!("{} is not a port of the switch", name(ingress))));
            return Traced { steps, verdict: "drop", drop_reason: Some("unknown_port".into()) };
        };
        let (src, dst) = (Mac::from_slice(frame, 6), Mac::from_slice(frame, 0));
        let Some(learn) = e.learn else {
            // Only a refused frame has no learning step.
            let reason = match e.verdict {
                Verdict::Drop(r) => r.to_string(),
                _ => "refused".to_string(),
            };
            steps.push(step("checks", "dropped", format!("refused before learning: {reason}")));
            return Traced { steps, verdict: "drop", drop_reason: Some(reason) };
        };
        steps.push(step("checks", "ok", format!("{} bytes, unicast source {src}", frame.len())));
        let (result, detail) = match learn {
            Learn::Learned => ("would learn", format!("{src} would be learned on {}", name(ingress))),
            Learn::LearnedEvicting { victim } => {
                ("would learn", format!("{src} would be learned on {}, evicting {} (the table is full)", name(ingress), victim.1))
            }
            Learn::Refreshed => ("already learned", format!("{src} is already learned on {} (its age would restart)", name(ingress))),
            Learn::Moved { from } => ("would move", format!("{src} would move from {} to {}", name(from), name(ingress))),
            Learn::Ignored => ("not learned", format!("{src} is held by a static entry: not learned")),
            Learn::PortLimit => (
                "not learned",
                format!(
                    "{} holds its maximum of {} learned entries: {src} is not learned",
                    name(ingress),
                    self.switch.fdb().config().per_port_max
                ),
            ),
            Learn::TableFull => ("not learned", "the MAC table is full of static entries: not learned".to_string()),
        };
        steps.push(step("learning", result, detail));
        let (result, detail) = match e.lookup {
            Some(Lookup::Hit(p)) => ("hit", format!("{dst} is on {}", name(p))),
            Some(Lookup::Hairpin) => ("hairpin", format!("{dst} is on the ingress port itself: dropped")),
            Some(Lookup::Multicast) => ("multicast", format!("{dst} is broadcast or multicast: flooded")),
            Some(Lookup::Foreign(p)) => ("foreign", format!("{dst} points at {} of another network: flooded instead", name(p))),
            Some(Lookup::Miss) | None => ("miss", format!("{dst} is not in the MAC table of this network: flooded")),
        };
        steps.push(step("lookup", result, detail));

        let from_tunnel = matches!(self.ports.get(ingress.0 as usize), Some(Some(PortIo::Tunnel { .. })));
        let outputs: Vec<PortId> = match e.verdict {
            Verdict::Drop(reason) => return Traced { steps, verdict: "drop", drop_reason: Some(reason.to_string()) },
            Verdict::Forward(p) => vec![p],
            Verdict::Flood => {
                let set: Vec<PortId> = self.switch.ports_of(e.network).iter().copied().filter(|&p| p != ingress).collect();
                let names_of: Vec<String> = set.iter().map(|&p| name(p)).collect();
                let detail = if names_of.is_empty() { "no other port on the network".to_string() } else { names_of.join(", ") };
                steps.push(step("flood", &format!("{} ports", set.len()), detail));
                set
            }
        };
        let mut verdict = if outputs.len() == 1 && !matches!(e.verdict, Verdict::Flood) { "forward" } else { "flood" };
        let mut drop_reason = None;
        for to in outputs {
            match self.ports.get(to.0 as usize) {
                Some(Some(PortIo::Tap { .. })) => {
                    if e.verdict == Verdict::Forward(to) {
                        steps.push(step("output", "tap", format!("written to {}'s TAP", name(to))));
                    }
                }
                Some(Some(PortIo::Tunnel { .. })) if from_tunnel => {
                    steps.push(step("output", "split horizon", format!("not sent to {}: nothing from a peer goes to another", name(to))));
                }
                Some(Some(PortIo::Tunnel { .. })) => steps.push(step("output", "tunnel", format!("sealed and sent to {}", name(to)))),
                Some(Some(PortIo::Gateway(_))) if from_tunnel => {
                    steps.push(step("gateway", "split horizon", "the gateway answers its own host's containers only".into()));
                }
                Some(Some(PortIo::Gateway(gw))) => {
                    let gw = *gw;
                    // For the gateway's MAC (even flooded while it is not learned yet): the
                    // gateway's decision is the frame's.
                    let addressed = e.verdict == Verdict::Forward(to) || dst == gw.mac;
                    let (v, reason) = self.trace_gateway(ingress, to, gw, frame, &mut steps, addressed);
                    if addressed {
                        verdict = v;
                        drop_reason = reason;
                    }
                }
                _ => {
                    steps.push(step("output", "dropped", format!("{} has no I/O: no_route", name(to))));
                    if e.verdict == Verdict::Forward(to) {
                        verdict = "drop";
                        drop_reason = Some("no_route".into());
                    }
                }
            }
        }
        Traced { steps, verdict, drop_reason }
    }

    /// The gateway's part: what it answers, or where it routes. `unicast`: the frame was for
    /// the gateway alone (not a flood copy). Returns the verdict when it decides one.
    fn trace_gateway(
        &mut self,
        ingress: PortId,
        gw_port: PortId,
        gw: crate::gateway::Gateway,
        frame: &[u8],
        steps: &mut Vec<TraceStep>,
        unicast: bool,
    ) -> (&'static str, Option<String>) {
        match gw.handle(frame, &mut self.reply[VNET_HDR_LEN..], false) {
            Outcome::Reply(n) => {
                let reply = &self.reply[VNET_HDR_LEN..VNET_HDR_LEN + n];
                let what = match reply.get(12..14) {
                    Some([0x08, 0x06]) => format!("ARP reply: {} is-at {}", gw.ip, gw.mac),
                    Some([0x08, 0x00]) => format!("ICMP echo reply from {}", gw.ip),
                    _ => "an IPv6 answer (neighbour advertisement or echo reply)".to_string(),
                };
                steps.push(step("gateway", "answered", what));
                ("gateway", None)
            }
            Outcome::Ignored => {
                steps.push(step("gateway", "ignored", "not for the gateway (it ignores it)".into()));
                (if unicast { "drop" } else { "flood" }, unicast.then(|| "ignored by the gateway".into()))
            }
            Outcome::Malformed => {
                steps.push(step("gateway", "dropped", "for the gateway but malformed (bad length or checksum): no_route".into()));
                ("drop", Some("no_route".into()))
            }
            Outcome::Dhcp(_) => {
                steps.push(step("dhcp", "to the DHCP server", "a DHCP client's message: answered from an interface port only".into()));
                ("gateway", None)
            }
            Outcome::Dns(q) => {
                let query = frame.get(q.payload.clone()).unwrap_or_default();
                let Some(view) = self.dns.views.get(ingress.0 as usize).cloned().flatten() else {
                    steps.push(step("dns", "dropped", "the port has no DNS view: dropped".into()));
                    return ("drop", Some("dns_no_view".into()));
                };
                let visible: Vec<&str> = view.visible.iter().map(String::as_str).collect();
                let out = &mut self.reply[VNET_HDR_LEN..];
                let decision = self.dns.responder.respond(&visible, view.internal, query, 0, out, dns::Limit::Udp(view.mtu as usize));
                let (result, detail, verdict) = match decision {
                    dns::Decision::Answer(n) => {
                        let answers = out.get(6..8).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                        let rcode = out.get(3).map_or(0, |b| b & 0x0f);
                        let what = if rcode == 3 { "NXDOMAIN".to_string() } else { format!("{answers} record(s), {n} bytes") };
                        (
                            "answered",
                            format!("UDP to {}:53 answered by the gateway's DNS on network {}: {what}", gw.ip, view.network),
                            "gateway",
                        )
                    }
                    dns::Decision::Forward => {
                        let to = if view.internal { "nowhere (internal network: NXDOMAIN)" } else { "the network's upstream resolvers" };
                        ("forwarded", format!("not a name of ours: forwarded to {to}"), "gateway")
                    }
                    dns::Decision::Reject(_, why) => ("error answer", format!("a bad query: answered with an error ({why:?})"), "gateway"),
                    dns::Decision::Drop(why) => ("dropped", format!("unreadable query: dropped ({why:?})"), "drop"),
                };
                steps.push(step("dns", result, detail));
                (verdict, (verdict == "drop").then(|| "dns_unreadable".into()))
            }
            Outcome::DnsTcp { .. } => {
                steps.push(step("dns", "tcp", format!("TCP to {}:53: the gateway's DNS over TCP (smoltcp) answers", gw.ip)));
                ("gateway", None)
            }
            Outcome::Routed { ip } => {
                let packet = frame.get(ip).unwrap_or_default();
                if !self.egress.serves(gw_port) {
                    steps.push(step("egress", "off", "for beyond the network, but egress is off (vswitchd --egress): dropped".into()));
                    return ("drop", Some("egress_off".into()));
                }
                let (allowed, detail) = self.egress.explain(gw_port, ingress, packet);
                steps.push(step("egress", if allowed { "allowed" } else { "refused" }, detail.clone()));
                if allowed {
                    ("egress", None)
                } else {
                    ("refused", Some(detail))
                }
            }
        }
    }
}
