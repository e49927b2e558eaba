//! API request bodies into the control plane's model: each line of the input is one request,
//! `OP NET EP JSON` (one byte each for OP, NET and EP, then the body). The model is I/O-free,
//! so this needs no namespace, socket or file. Checked on every request: no panic; a refused
//! request leaves `snapshot()` as it was; an accepted one undone (as the operations undo a
//! failed effect) leaves it as it was too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::api::{AttachRequest, EndpointUpdate, NetworkCreate, PeerAdd, PublishRule};
use vswitch::control::model::{Config, Model, NetnsInfo};

fn model() -> Model {
    let ula = ipam::SubnetPools::ula48([1, 2, 3, 4, 5]);
    let cfg = Config {
        offloads: true,
        egress: true,
        tunnel: true,
        underlay_mtu: 1500,
        pools: ipam::SubnetPools::with_defaults(ula).expect("default pools"),
    };
    Model::new(cfg, ula)
}

fn netns(i: u8) -> NetnsInfo {
    NetnsInfo { path: format!("/run/netns/c{i}"), id: Some((4, u64::from(i % 8) + 1)), own: Some((4, 0)) }
}

fuzz_target!(|data: &[u8]| {
    let mut m = model();
    for line in data.split(|&b| b == b'\n').take(32) {
        let [op, n, e, body @ ..] = line else { continue };
        let network = format!("n{}", n % 4);
        let endpoint = format!("c{}", e % 4);
        let undo = e & 0x80 != 0;
        let before = m.snapshot();
        match op % 8 {
            0 => {
                let Ok(req) = serde_json::from_slice::<NetworkCreate>(body) else { continue };
                match m.create_network(req, &[]) {
                    Err(_) => assert_eq!(m.snapshot(), before, "a refused network create changed the model"),
                    Ok((plan, _)) if undo => {
                        m.undo_create_network(&plan);
                        assert_eq!(m.snapshot(), before, "an undone network create left traces");
                    }
                    Ok(_) => {}
                }
            }
            1 => {
                let Ok(req) = serde_json::from_slice::<AttachRequest>(body) else { continue };
                match m.attach(&network, req, netns(*e)) {
                    Err(_) => assert_eq!(m.snapshot(), before, "a refused attach changed the model"),
                    Ok(plan) if undo => {
                        m.abandon_attach(plan);
                        assert_eq!(m.snapshot(), before, "an abandoned attach left traces");
                    }
                    Ok(plan) => {
                        let _ = m.attached(&plan, Vec::new());
                    }
                }
            }
            2 => {
                let Ok(req) = serde_json::from_slice::<EndpointUpdate>(body) else { continue };
                if m.update_endpoint(&network, &endpoint, req).is_err() {
                    assert_eq!(m.snapshot(), before, "a refused endpoint update changed the model");
                }
            }
            3 => {
                let Ok(rule) = serde_json::from_slice::<PublishRule>(body) else { continue };
                let checked = m.check_publish(&network, &endpoint, &rule);
                assert_eq!(m.snapshot(), before, "checking a publication changed the model");
                if let Ok(t) = checked {
                    let ids = (0..t.count as usize).collect();
                    if m.add_publication(&network, &endpoint, rule, ids).is_err() {
                        assert_eq!(m.snapshot(), before, "a refused publication changed the model");
                    }
                }
            }
            4 => {
                let Ok(req) = serde_json::from_slice::<PeerAdd>(body) else { continue };
                if m.add_peer(&req).is_err() {
                    assert_eq!(m.snapshot(), before, "a refused peer add changed the model");
                }
            }
            5 => {
                if m.begin_remove_network(&network, undo).is_ok() {
                    m.finish_remove_network(&network);
                } else {
                    assert_eq!(m.snapshot(), before, "a refused network removal changed the model");
                }
            }
            6 => m.forget(&network, &endpoint),
            _ => {
                let _ = m.ipam_gc();
            }
        }
    }
});
