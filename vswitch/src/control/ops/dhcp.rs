//! The DHCP server's control side: clients' messages from the datapath are decided by the
//! model (IPAM leases), saved when they change a lease, and answered through a datapath job.

use std::sync::Arc;

use super::Control;
use crate::datapath::DhcpRequest;

/// Takes DHCP clients' messages from the datapath until it stops. Call once, inside the
/// runtime, with the daemon's control plane.
pub fn start(control: Arc<Control>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<DhcpRequest>(1024);
    let _ = control.dp.submit_fn(move |e| e.set_dhcp(tx));
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            control.answer_dhcp(r).await;
        }
    });
}

impl Control {
    async fn answer_dhcp(&self, r: DhcpRequest) {
        let mut m = self.model.lock().await;
        let (answer, changed) = m.dhcp(r.gw_port, &r.query);
        if changed && self.save(&m).is_err() {
            // Not on disk: no lease given (the client asks again).
            return;
        }
        drop(m);
        if let Some((answer, lease)) = answer {
            let _ = self.dp.submit_fn(move |e| e.send_dhcp_reply(r.gw_port, &r.query, answer, &lease));
        }
    }
}
