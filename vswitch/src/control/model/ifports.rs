//! Interface ports: existing interfaces of vswitchd's namespace attached to networks, untagged
//! (access), with one 802.1Q tag, or as trunks carrying several networks by VLAN id; and the
//! uplink port a network is created with.

use super::errors::no_network;
use super::Model;
use crate::api::{ApiError, ErrorCode, InterfacePort, PortAdd, PortMember};
use crate::datapath::IfaceMember;
use crate::state::{IfacePortState, MemberState};
use crate::types::PortId;

/// The owner of the pool address an uplink network's switch answers DNS at.
pub const SERVICE_OWNER: &str = "vswitch";

#[derive(Debug, Clone)]
pub(super) struct IfPort {
    pub(super) members: Vec<Member>,
    /// The network whose uplink this is: made and removed with it.
    pub(super) uplink_of: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) network: String,
    pub(super) vlan: Option<u16>,
    pub(super) port: PortId,
}

/// An interface port the model took in: what the datapath must be told.
#[derive(Debug, Clone)]
pub struct IfPortPlan {
    pub interface: String,
    /// The first member's port: the one epoll reports the socket under.
    pub main: PortId,
    pub members: Vec<IfaceMember>,
    pub api: InterfacePort,
}

/// A VLAN id as given, checked to be 1-4094 (0 means "priority tag only" and 4095 is
/// reserved by 802.1Q).
///
/// # Errors
/// Out of range.
pub fn check_vlan(v: u32) -> Result<u16, ApiError> {
    match u16::try_from(v) {
        Ok(id) if (1..=4094).contains(&id) => Ok(id),
        _ => Err(ApiError::new(ErrorCode::InvalidVlan, format!("VLAN id {v} is out of range: it must be 1 to 4094"))),
    }
}

impl Model {
    /// Validates an interface port and takes it in (port ids). `exists`: the interface is in
    /// vswitchd's namespace (only I/O can tell). `uplink_of`: made as a network's uplink.
    ///
    /// # Errors
    /// No such network or interface, the interface already a port, a VLAN id out of range,
    /// both `vlan` and `trunk`, a trunk id listed twice or that no network has.
    pub fn add_ifport(&mut self, req: &PortAdd, exists: bool, uplink_of: Option<&str>) -> Result<IfPortPlan, ApiError> {
        crate::sys::netns::validate_ifname(&req.interface).map_err(|e| ApiError::new(ErrorCode::InvalidName, e.to_string()))?;
        let net = self.net(&req.network)?;
        if req.vlan.is_some() && !req.trunk.is_empty() {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "give --vlan (one tagged network) or --trunk (several), not both"));
        }
        let vlan = req.vlan.map(check_vlan).transpose()?;
        let mut trunk: Vec<u16> = Vec::new();
        for &v in &req.trunk {
            let id = check_vlan(v)?;
            if trunk.contains(&id) {
                return Err(ApiError::new(ErrorCode::InvalidVlan, format!("VLAN id {id} is listed twice")));
            }
            trunk.push(id);
        }
        if self.ifports.contains_key(&req.interface) {
            return Err(ApiError::new(
                ErrorCode::InterfaceInUse,
                format!("interface {} is already a port; remove it first", req.interface),
            ));
        }
        if !exists {
            return Err(ApiError::new(
                ErrorCode::InterfaceNotFound,
                format!("no interface {} in vswitchd's network namespace", req.interface),
            ));
        }
        let mut members: Vec<(String, Option<u16>)> = Vec::new();
        if trunk.is_empty() {
            members.push((req.network.clone(), vlan));
        } else {
            if !net.vlan.is_some_and(|v| trunk.contains(&v)) {
                // The named network has no tag on this trunk: it gets the untagged frames.
                members.push((req.network.clone(), None));
            }
            for id in trunk {
                let Some((name, _)) = self.networks.iter().find(|(_, n)| n.vlan == Some(id)) else {
                    return Err(ApiError::new(
                        ErrorCode::InvalidVlan,
                        format!("no network has VLAN id {id}: create one with `network create NAME --vlan {id}`"),
                    ));
                };
                members.push((name.clone(), Some(id)));
            }
        }
        Ok(self.take_ifport(&req.interface, members, uplink_of.map(str::to_string)))
    }

    fn take_ifport(&mut self, interface: &str, members: Vec<(String, Option<u16>)>, uplink_of: Option<String>) -> IfPortPlan {
        let members: Vec<Member> = members.into_iter().map(|(network, vlan)| Member { network, vlan, port: self.ports.take() }).collect();
        let port = IfPort { members, uplink_of };
        let plan = self.ifport_plan(interface, &port);
        self.ifports.insert(interface.to_string(), port);
        plan
    }

    fn ifport_plan(&self, interface: &str, p: &IfPort) -> IfPortPlan {
        let members = p
            .members
            .iter()
            .filter_map(|m| {
                let n = self.networks.get(&m.network)?;
                Some(IfaceMember { vlan: m.vlan, port: m.port, network: n.id, mtu: n.mtu, trusted: p.uplink_of.is_some() })
            })
            .collect();
        IfPortPlan { interface: interface.to_string(), main: p.members[0].port, members, api: ifport_api(interface, p) }
    }

    /// Forgets an interface port (taken in, then refused by the effects, or removed).
    pub fn forget_ifport(&mut self, interface: &str) {
        if let Some(p) = self.ifports.remove(interface) {
            for m in p.members {
                self.ports.give_back(m.port);
            }
        }
    }

    /// The interface port to remove, checked: it exists and is no network's uplink.
    ///
    /// # Errors
    /// Not a port, or an uplink (removed with its network).
    pub fn ifport_to_remove(&self, interface: &str) -> Result<PortId, ApiError> {
        let Some(p) = self.ifports.get(interface) else {
            return Err(ApiError::new(ErrorCode::InterfaceNotFound, format!("interface {interface} is not a port")));
        };
        if let Some(n) = &p.uplink_of {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!("interface {interface} is the uplink of network {n}; it goes when the network is removed"),
            ));
        }
        Ok(p.members[0].port)
    }

    /// The main port of a network's uplink, if it has one up.
    pub fn network_uplink_port(&self, network: &str) -> Option<PortId> {
        self.ifports_of(network).into_iter().find(|(_, _, up)| *up).map(|(_, p, _)| p)
    }

    /// The interface ports, as the API shows them.
    pub fn ifports(&self) -> Vec<InterfacePort> {
        self.ifports.iter().map(|(i, p)| ifport_api(i, p)).collect()
    }

    /// Takes a saved interface port back in (new port ids).
    ///
    /// # Errors
    /// A network it names is not in the model.
    pub fn restore_ifport(&mut self, s: &IfacePortState) -> Result<IfPortPlan, ApiError> {
        if let Some(m) = s.members.iter().find(|m| !self.networks.contains_key(&m.network)) {
            return Err(no_network(&m.network));
        }
        if s.members.is_empty() || self.ifports.contains_key(&s.interface) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("interface port {} is listed twice or empty", s.interface)));
        }
        let members = s.members.iter().map(|m| (m.network.clone(), m.vlan)).collect();
        Ok(self.take_ifport(&s.interface, members, s.uplink_of.clone()))
    }

    /// The saved form of every interface port.
    pub(super) fn ifport_states(&self) -> Vec<IfacePortState> {
        self.ifports
            .iter()
            .map(|(i, p)| IfacePortState {
                interface: i.clone(),
                uplink_of: p.uplink_of.clone(),
                members: p.members.iter().map(|m| MemberState { network: m.network.clone(), vlan: m.vlan }).collect(),
            })
            .collect()
    }

    /// Interface ports with a member in `network`: (interface, main port, uplink of it).
    pub(super) fn ifports_of(&self, network: &str) -> Vec<(String, PortId, bool)> {
        self.ifports
            .iter()
            .filter(|(_, p)| p.members.iter().any(|m| m.network == network))
            .map(|(i, p)| (i.clone(), p.members[0].port, p.uplink_of.as_deref() == Some(network)))
            .collect()
    }
}

fn ifport_api(interface: &str, p: &IfPort) -> InterfacePort {
    InterfacePort {
        interface: interface.to_string(),
        members: p.members.iter().map(|m| PortMember { network: m.network.clone(), vlan: m.vlan, port: m.port }).collect(),
        uplink_of: p.uplink_of.clone(),
    }
}
