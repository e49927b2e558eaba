//! `/v1/ports` (POST, DELETE): interface ports, and the uplink a network is made with.

use super::endpoints::sys_error;
use super::Control;
use crate::api::{ApiError, ErrorCode, InterfacePort, PortAdd};
use crate::control::model::{internal, IfPortPlan, Model};
use crate::sys::packet::PacketSocket;

impl Control {
    /// Attaches an existing interface of vswitchd's namespace to a network.
    pub async fn add_port(&self, req: PortAdd) -> Result<InterfacePort, ApiError> {
        let exists = interface_exists(&req.interface).await?;
        let mut m = self.model.lock().await;
        let plan = m.add_ifport(&req, exists, None)?;
        let api = self.bring_up_ifport(&mut m, plan, true).await?;
        tracing::info!(interface = %req.interface, network = %req.network, "interface port added");
        Ok(api)
    }

    /// Opens the packet socket of an interface port the model took in and hands it to the
    /// datapath; saves when `save`. Any failure forgets the port again.
    pub(super) async fn bring_up_ifport(&self, m: &mut Model, plan: IfPortPlan, save: bool) -> Result<InterfacePort, ApiError> {
        let ifname = plan.interface.clone();
        let opened = tokio::task::spawn_blocking(move || PacketSocket::open(&ifname)).await.map_err(internal);
        let sock = match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                m.forget_ifport(&plan.interface);
                return Err(sys_error(e));
            }
            Err(e) => {
                m.forget_ifport(&plan.interface);
                return Err(e);
            }
        };
        let (file, members, main) = (sock.into_file(), plan.members.clone(), plan.main);
        let added = self.dp.call(move |e| e.add_iface(file, &members)).await;
        if let Err(e) = added.map_err(internal).and_then(|r| r.map_err(internal)) {
            m.forget_ifport(&plan.interface);
            return Err(e);
        }
        if save {
            if let Err(e) = self.save(m) {
                let _ = self.dp.call(move |e| e.remove_iface(main)).await;
                m.forget_ifport(&plan.interface);
                return Err(e);
            }
        }
        Ok(plan.api)
    }

    /// Takes an interface port off its networks; the interface stays as it was.
    pub async fn remove_port(&self, interface: &str) -> Result<(), ApiError> {
        let mut m = self.model.lock().await;
        let main = m.ifport_to_remove(interface)?;
        self.dp.call(move |e| e.remove_iface(main)).await.map_err(internal)?;
        m.forget_ifport(interface);
        self.save(&m)?;
        tracing::info!(interface, "interface port removed");
        Ok(())
    }

    /// The interface ports.
    pub async fn interface_ports(&self) -> Vec<InterfacePort> {
        self.model.lock().await.ifports()
    }
}

/// Whether `ifname` is an interface of vswitchd's namespace.
///
/// # Errors
/// A bad name.
pub(super) async fn interface_exists(ifname: &str) -> Result<bool, ApiError> {
    let name = ifname.to_string();
    match tokio::task::spawn_blocking(move || crate::sys::packet::ifindex(&name)).await.map_err(internal)? {
        Ok(i) => Ok(i.is_some()),
        Err(crate::sys::SysError::InvalidName(m)) => Err(ApiError::new(ErrorCode::InvalidName, format!("interface name {m}"))),
        Err(e) => Err(sys_error(e)),
    }
}
