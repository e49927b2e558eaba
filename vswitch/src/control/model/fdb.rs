//! Static MAC table entries: which port a name stands for, and the entries to restore.

use super::errors::no_endpoint;
use super::Model;
use crate::api::ApiError;
use crate::types::{Mac, NetworkId, PortId};

impl Model {
    /// The network id and port of `port` (an endpoint's name or `gateway`) on `network`.
    ///
    /// # Errors
    /// No such network or endpoint.
    pub fn port_of(&self, network: &str, port: &str) -> Result<(NetworkId, PortId), ApiError> {
        let net = self.net(network)?;
        match net.endpoints.get(port) {
            Some(ep) => Ok((net.id, ep.api.port)),
            None if port == "gateway" => Ok((net.id, net.gw_port)),
            None => Err(no_endpoint(network, port)),
        }
    }

    /// Records a static entry the switch took.
    pub fn add_static(&mut self, network: &str, mac: Mac, port: &str) {
        if let Some(net) = self.networks.get_mut(network) {
            net.static_macs.insert(mac, port.to_string());
        }
    }

    /// Forgets a static entry; returns whether there was one.
    pub fn remove_static(&mut self, network: &str, mac: Mac) -> bool {
        self.networks.get_mut(network).is_some_and(|n| n.static_macs.remove(&mac).is_some())
    }
}
