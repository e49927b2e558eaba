//! Docker's plugin protocol (libnetwork's remote network driver and IPAM driver) on a Unix
//! socket dockerd finds in `/run/docker/plugins`: `POST /Plugin.Activate`,
//! `/NetworkDriver.*`, `/IpamDriver.*` with JSON bodies; errors as `{"Err": "..."}`.
//!
//! Translation only: each call's JSON becomes one [`Control`] call (`ops/docker.rs`) and its
//! answer JSON again.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::Ipv4Net;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use crate::api::{ApiError, ErrorCode, Proto, PublishRule};
use crate::control::model::docker::pool_subnet;
use crate::control::ops::docker::DockerNetwork;
use crate::control::Control;
use crate::types::Mac;

/// Where dockerd looks for a plugin named `vswitch`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/vswitch.sock";
/// The protocol's content type.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";
/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// A request (head and body) must arrive within this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most plugin connections served at once (dockerd opens a few).
const MAX_CONNECTIONS: usize = 64;

/// Generic options (`-o KEY=VALUE` of `docker network create`) inside CreateNetwork's options.
const GENERIC: &str = "com.docker.network.generic";
const OPT_NETWORK: &str = "vswitch.network";
const OPT_OVERLAY: &str = "vswitch.overlay";
const OPT_MTU: &str = "com.docker.network.driver.mtu";
const OPT_INTERNAL: &str = "com.docker.network.internal";
const OPT_PORTMAP: &str = "com.docker.network.portmap";
const GATEWAY_TYPE: &str = "com.docker.network.gateway";
const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";

/// Serves the plugin protocol on `listener` for as long as the runtime runs.
pub async fn serve(listener: UnixListener, control: Arc<Control>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the Docker plugin socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(&control, req).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = served.await {
                tracing::trace!(error = %e, "Docker plugin connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn handle(control: &Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let call = req.uri().path().trim_start_matches('/').to_string();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &call, &e),
    };
    tracing::debug!(call, body = %String::from_utf8_lossy(&body), "Docker plugin call");
    match dispatch(control, &call, &body).await {
        Ok(v) => reply(StatusCode::OK, &v),
        Err(e) => {
            let status = match e.error.code {
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, &call, &e)
        }
    }
}

async fn dispatch(control: &Control, call: &str, body: &[u8]) -> Result<Value, ApiError> {
    match call {
        "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
        "NetworkDriver.GetCapabilities" => Ok(json!({"Scope": "local", "ConnectivityScope": "local"})),
        "NetworkDriver.CreateNetwork" => {
            let r: CreateNetwork = parse(body)?;
            control.docker_create_network(r.into_request()?).await?;
            Ok(json!({}))
        }
        "NetworkDriver.DeleteNetwork" => {
            let r: NetworkRef = parse(body)?;
            control.docker_delete_network(&r.network_id).await?;
            Ok(json!({}))
        }
        "NetworkDriver.CreateEndpoint" => {
            let r: CreateEndpoint = parse(body)?;
            let iface = r.interface.unwrap_or_default();
            let (ip, _) = parse_cidr4(&iface.address, "Interface.Address")?;
            let mac = match iface.mac_address.as_str() {
                "" => None,
                m => Some(m.parse::<Mac>().map_err(|_| invalid(format!("Interface.MacAddress {m:?} is not a MAC address")))?),
            };
            if !iface.address_ipv6.is_empty() {
                return Err(invalid("vswitch's Docker driver has no IPv6 yet: create the network without --ipv6"));
            }
            let ep = control.docker_create_endpoint(&r.network_id, &r.endpoint_id, ip, mac).await?;
            // A MAC Docker gave must not be sent back ("driver modified interface MAC address").
            Ok(match mac {
                Some(_) => json!({"Interface": {}}),
                None => json!({"Interface": {"MacAddress": ep.mac.to_string()}}),
            })
        }
        "NetworkDriver.DeleteEndpoint" => {
            let r: EndpointRef = parse(body)?;
            control.docker_delete_endpoint(&r.network_id, &r.endpoint_id).await?;
            Ok(json!({}))
        }
        "NetworkDriver.EndpointOperInfo" => {
            let r: EndpointRef = parse(body)?;
            let ep = control.docker_endpoint(&r.network_id, &r.endpoint_id).await?;
            Ok(json!({"Value": {"vswitch.endpoint": ep.name, "vswitch.network": ep.network, "vswitch.port": ep.port.0}}))
        }
        "NetworkDriver.Join" => {
            let r: Join = parse(body)?;
            if r.sandbox_key.is_empty() {
                return Err(invalid("Join without a SandboxKey"));
            }
            let (ep, gateway) = control.docker_join(&r.network_id, &r.endpoint_id, &r.sandbox_key).await?;
            Ok(json!({
                "InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"},
                "Gateway": gateway.to_string(),
                "StaticRoutes": [],
                "DisableGatewayService": false,
            }))
        }
        "NetworkDriver.Leave" => {
            let r: EndpointRef = parse(body)?;
            control.docker_leave(&r.network_id, &r.endpoint_id).await?;
            Ok(json!({}))
        }
        "NetworkDriver.ProgramExternalConnectivity" => {
            let r: Program = parse(body)?;
            let rules = port_rules(r.options.get(OPT_PORTMAP))?;
            control.docker_program(&r.network_id, &r.endpoint_id, rules).await?;
            Ok(json!({}))
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            let r: EndpointRef = parse(body)?;
            control.docker_revoke(&r.network_id, &r.endpoint_id).await?;
            Ok(json!({}))
        }
        // Swarm's node discovery: nothing to do for a local driver.
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "IpamDriver.GetCapabilities" => Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})),
        "IpamDriver.GetDefaultAddressSpaces" => {
            Ok(json!({"LocalDefaultAddressSpace": "vswitch-local", "GlobalDefaultAddressSpace": "vswitch-global"}))
        }
        "IpamDriver.RequestPool" => {
            let r: RequestPool = parse(body)?;
            if !r.sub_pool.is_empty() {
                return Err(invalid("vswitch's IPAM driver takes no --ip-range yet: give the whole --subnet"));
            }
            let subnet = control.docker_request_pool(&r.pool, r.v6).await?;
            Ok(json!({"PoolID": crate::control::model::docker::pool_id(subnet), "Pool": subnet.to_string(), "Data": {}}))
        }
        "IpamDriver.ReleasePool" => {
            let r: PoolRef = parse(body)?;
            pool_subnet(&r.pool_id)?;
            Ok(json!({}))
        }
        "IpamDriver.RequestAddress" => {
            let r: RequestAddress = parse(body)?;
            let subnet = pool_subnet(&r.pool_id)?;
            let want = match r.address.as_str() {
                "" => None,
                a => Some(a.parse::<Ipv4Addr>().map_err(|_| invalid(format!("Address {a:?} is not an IPv4 address")))?),
            };
            let gateway = r.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE);
            let ip = control.docker_request_address(subnet, want, gateway).await?;
            Ok(json!({"Address": format!("{ip}/{}", subnet.prefix_len()), "Data": {}}))
        }
        "IpamDriver.ReleaseAddress" => {
            let r: RequestAddress = parse(body)?;
            let subnet = pool_subnet(&r.pool_id)?;
            let ip = r.address.parse::<Ipv4Addr>().map_err(|_| invalid(format!("Address {:?} is not an IPv4 address", r.address)))?;
            control.docker_release_address(subnet, ip).await?;
            Ok(json!({}))
        }
        other => Err(ApiError::new(ErrorCode::NotFound, format!("vswitch does not implement {other:?}"))),
    }
}

#[derive(Debug, Deserialize)]
struct NetworkRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
}

#[derive(Debug, Deserialize)]
struct EndpointRef {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Debug, Deserialize)]
struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Deserialize)]
struct IpamData {
    #[serde(rename = "Pool", default)]
    pool: String,
    #[serde(rename = "Gateway", default)]
    gateway: String,
}

impl CreateNetwork {
    fn into_request(self) -> Result<DockerNetwork, ApiError> {
        if self.ipv6_data.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(invalid("vswitch's Docker driver has no IPv6 yet: create the network without --ipv6"));
        }
        let v4 = self.ipv4_data.unwrap_or_default();
        if v4.len() > 1 {
            return Err(invalid("a vswitch network has one IPv4 subnet: give one --subnet"));
        }
        let (subnet, gateway) = match v4.first() {
            Some(d) => {
                let subnet = d.pool.parse::<Ipv4Net>().map_err(|_| invalid(format!("IPv4Data.Pool {:?} is not a CIDR", d.pool)))?;
                let gateway = match d.gateway.as_str() {
                    "" => None,
                    g => Some(parse_cidr4(g, "IPv4Data.Gateway")?.0),
                };
                (Some(subnet), gateway)
            }
            None => (None, None),
        };
        let generic = match self.options.get(GENERIC) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => return Err(invalid(format!("Options.{GENERIC} is not an object"))),
        };
        let flag = |v: Option<&Value>| matches!(v, Some(Value::Bool(true))) || v.and_then(Value::as_str) == Some("true");
        let text = |k: &str| -> Result<Option<String>, ApiError> {
            match generic.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(format!("option {k} is {other}, not a string"))),
            }
        };
        let mtu =
            text(OPT_MTU)?.map(|m| m.parse::<u32>().map_err(|_| invalid(format!("option {OPT_MTU}={m:?} is not a number")))).transpose()?;
        if let Some(v) = text(OPT_OVERLAY)? {
            if v != "true" && v != "false" {
                return Err(invalid(format!("option {OPT_OVERLAY}={v:?}: expected true or false")));
            }
        }
        Ok(DockerNetwork {
            id: self.network_id,
            subnet,
            gateway,
            internal: flag(self.options.get(OPT_INTERNAL)) || flag(generic.get(OPT_INTERNAL)),
            overlay: flag(generic.get(OPT_OVERLAY)),
            mtu,
            name: text(OPT_NETWORK)?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Interface {
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(rename = "MacAddress", default)]
    mac_address: String,
}

#[derive(Debug, Deserialize)]
struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface", default)]
    interface: Option<Interface>,
}

#[derive(Debug, Deserialize)]
struct Join {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    sandbox_key: String,
}

#[derive(Debug, Deserialize)]
struct Program {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    options: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RequestPool {
    #[serde(rename = "Pool", default)]
    pool: String,
    #[serde(rename = "SubPool", default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
}

#[derive(Debug, Deserialize)]
struct PoolRef {
    #[serde(rename = "PoolID")]
    pool_id: String,
}

#[derive(Debug, Deserialize)]
struct RequestAddress {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    options: BTreeMap<String, String>,
}

/// One entry of `com.docker.network.portmap` (libnetwork's `types.PortBinding`).
#[derive(Debug, Deserialize)]
struct PortBinding {
    #[serde(rename = "Proto")]
    proto: u8,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "HostIP", default)]
    host_ip: Option<String>,
    #[serde(rename = "HostPort", default)]
    host_port: u16,
    #[serde(rename = "HostPortEnd", default)]
    host_port_end: u16,
}

/// `-p` mappings as publications.
fn port_rules(portmap: Option<&Value>) -> Result<Vec<PublishRule>, ApiError> {
    let Some(v) = portmap.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let bindings: Vec<PortBinding> =
        serde_json::from_value(v.clone()).map_err(|e| invalid(format!("option {OPT_PORTMAP} is not a list of port bindings: {e}")))?;
    bindings
        .into_iter()
        .map(|b| {
            let proto = match b.proto {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                p => return Err(invalid(format!("port mapping protocol {p} is not TCP (6) or UDP (17)"))),
            };
            if b.host_port == 0 {
                return Err(invalid(format!(
                    "port {}/{} has no host port: vswitch publishes only explicit ones (-p HOSTPORT:{})",
                    b.port,
                    proto.as_str(),
                    b.port
                )));
            }
            let host_addr = match b.host_ip.as_deref() {
                None | Some("") => Ipv4Addr::UNSPECIFIED,
                Some(a) => a.parse().map_err(|_| invalid(format!("host address {a:?} is not IPv4: vswitch publishes on IPv4 only")))?,
            };
            let end = (b.host_port_end > b.host_port).then_some(b.host_port_end);
            Ok(PublishRule { proto, host_addr, host_port: b.host_port, host_port_end: end, container_port: b.port })
        })
        .collect()
}

/// Go's nil maps and slices arrive as `null`: the same as empty.
fn null_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| invalid(format!("malformed request: {e}")))
}

/// `10.77.0.2/24` (or a bare address, prefix 32).
fn parse_cidr4(s: &str, what: &str) -> Result<(Ipv4Addr, u8), ApiError> {
    if let Ok(net) = s.parse::<Ipv4Net>() {
        return Ok((net.addr(), net.prefix_len()));
    }
    s.parse::<Ipv4Addr>().map(|a| (a, 32)).map_err(|_| invalid(format!("{what} {s:?} is not an IPv4 address")))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| invalid(format!("the request body did not arrive within {} s", TIMEOUT.as_secs())))?;
    collected.map(|c| c.to_bytes()).map_err(|e| invalid(format!("could not read the request body: {e}")))
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
    r
}

fn error(status: StatusCode, call: &str, e: &ApiError) -> Response<Full<Bytes>> {
    tracing::info!(call, error = %e.error.message, "Docker plugin call refused");
    reply(status, &json!({"Err": e.error.message}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_network_options() {
        let body = br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.internal":true,
            "com.docker.network.generic":{"vswitch.network":"front","com.docker.network.driver.mtu":"1400","vswitch.overlay":"true"}},
            "IPv4Data":[{"AddressSpace":"x","Gateway":"10.77.0.1/24","Pool":"10.77.0.0/24"}],"IPv6Data":[]}"#;
        let r: CreateNetwork = parse(body).unwrap();
        let d = r.into_request().unwrap();
        assert_eq!(d.subnet, Some("10.77.0.0/24".parse().unwrap()));
        assert_eq!(d.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert!(d.internal && d.overlay);
        assert_eq!(d.mtu, Some(1400));
        assert_eq!(d.name.as_deref(), Some("front"));
    }

    #[test]
    fn bad_options_are_refused() {
        let r: CreateNetwork = parse(br#"{"NetworkID":"a","Options":{"com.docker.network.generic":{"vswitch.overlay":"maybe"}}}"#).unwrap();
        assert!(r.into_request().is_err());
        let r: CreateNetwork = parse(br#"{"NetworkID":"a","IPv4Data":[{"Pool":"nonsense"}]}"#).unwrap();
        assert!(r.into_request().is_err());
        assert!(parse::<CreateNetwork>(b"{not json").is_err());
        assert!(parse::<EndpointRef>(br#"{"NetworkID":1}"#).is_err());
    }

    #[test]
    fn port_mappings() {
        let v: Value = serde_json::from_str(
            r#"[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":18080,"HostPortEnd":18080},
                {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":15353,"HostPortEnd":15355}]"#,
        )
        .unwrap();
        let rules = port_rules(Some(&v)).unwrap();
        assert_eq!(
            rules[0],
            PublishRule { proto: Proto::Tcp, host_addr: Ipv4Addr::UNSPECIFIED, host_port: 18080, host_port_end: None, container_port: 80 }
        );
        assert_eq!(rules[1].host_port_end, Some(15355));
        assert_eq!(rules[1].host_addr, Ipv4Addr::LOCALHOST);
        let no_host: Value = serde_json::from_str(r#"[{"Proto":6,"Port":80,"HostPort":0}]"#).unwrap();
        assert!(port_rules(Some(&no_host)).is_err());
        assert!(port_rules(Some(&json!("x"))).is_err());
        assert!(port_rules(None).unwrap().is_empty());
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_cidr4("10.77.0.2/24", "a").unwrap(), (Ipv4Addr::new(10, 77, 0, 2), 24));
        assert_eq!(parse_cidr4("10.77.0.2", "a").unwrap().1, 32);
        assert!(parse_cidr4("fd00::2/64", "a").is_err());
    }
}
