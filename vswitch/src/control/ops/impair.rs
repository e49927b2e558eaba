//! `POST /v1/ports/impair`: a container port's link impairments, set on the datapath.
//!
//! Impairments are runtime state of the datapath, like counters: they are not written to
//! `state.json`, so a restart starts without them (a testbed applies them again).

use super::Control;
use crate::api::{ApiError, ErrorCode, ImpairRequest, PortInfo};
use crate::control::model::{internal, PortRow};
use crate::datapath::impaired::Dir;

impl Control {
    /// Sets, changes or clears the impairments of the port `req.target` names; answers the
    /// port as `port ls` shows it.
    ///
    /// # Errors
    /// `invalid_request` for a value out of range (the message names it) or a target on several
    /// networks, `endpoint_not_found` when no container port has that name.
    pub async fn impair(&self, req: ImpairRequest) -> Result<PortInfo, ApiError> {
        let m = self.model.lock().await;
        let row = resolve_endpoint(&m.port_rows(), &req.target)?;
        let seed = u64::from_le_bytes(super::random_bytes::<8>());
        let cfg = match &req.impairment {
            None => None,
            Some(imp) => {
                let cfg = imp.check(seed).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.0))?;
                // `port ls` shows the seed in use, so a run can be repeated.
                let asked = crate::impair::Impairment { seed: Some(cfg.seed()), ..imp.clone() };
                Some((asked, cfg))
            }
        };
        let dirs: &[Dir] = match (req.ingress, req.egress) {
            (true, true) => &[Dir::Ingress, Dir::Egress],
            (true, false) => &[Dir::Ingress],
            _ => &[Dir::Egress],
        };
        let (port, dirs) = (row.id, dirs.to_vec());
        self.dp
            .call(move |e| dirs.into_iter().try_for_each(|d| e.set_impairment(port, d, cfg.clone())))
            .await
            .map_err(internal)?
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        drop(m);
        let mut info = self.port_infos(vec![row]).await?;
        info.pop().ok_or_else(|| ApiError::new(ErrorCode::Internal, "the port went away"))
    }
}

/// The container port `target` names: `NETWORK/ENDPOINT`, or an endpoint name on one network.
///
/// # Errors
/// `endpoint_not_found` when none matches (gateways and tunnel peers are not container
/// ports), `invalid_request` when the name is on several networks.
pub fn resolve_endpoint(rows: &[PortRow], target: &str) -> Result<PortRow, ApiError> {
    let (net, name) = target.split_once('/').map_or((None, target), |(n, e)| (Some(n), e));
    let found: Vec<&PortRow> = rows.iter().filter(|r| r.kind == "tap" && r.name == name && net.is_none_or(|n| n == r.network)).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            ErrorCode::EndpointNotFound,
            format!("no container endpoint {target:?}: give ENDPOINT or NETWORK/ENDPOINT as `vswitchctl port ls` lists them"),
        )),
        many => {
            let nets: Vec<&str> = many.iter().map(|r| r.network.as_str()).collect();
            Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is on several networks ({}): say NETWORK/{name}", nets.join(", ")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Mac, PortId};

    fn row(id: u32, net: &str, name: &str, kind: &'static str) -> PortRow {
        PortRow {
            id: PortId(id),
            network: net.into(),
            name: name.into(),
            kind,
            ifname: "eth0".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            offloads: vec![],
            vlan: None,
        }
    }

    #[test]
    fn targets() {
        let rows = [row(0, "a", "gateway", "gateway"), row(1, "a", "c1", "tap"), row(2, "b", "c1", "tap"), row(3, "b", "c2", "tap")];
        assert_eq!(resolve_endpoint(&rows, "c2").unwrap().id, PortId(3));
        assert_eq!(resolve_endpoint(&rows, "b/c1").unwrap().id, PortId(2));
        assert_eq!(resolve_endpoint(&rows, "c1").unwrap_err().error.code, ErrorCode::InvalidRequest);
        assert_eq!(resolve_endpoint(&rows, "gateway").unwrap_err().error.code, ErrorCode::EndpointNotFound);
        assert_eq!(resolve_endpoint(&rows, "a/c2").unwrap_err().error.code, ErrorCode::EndpointNotFound);
    }
}
