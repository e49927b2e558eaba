//! How the model's refusals and the libraries' errors become API errors with stable codes.

use crate::api::{ApiError, ErrorCode};

pub(super) fn no_network(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NetworkNotFound, format!("no network named {name}"))
}

pub(super) fn no_endpoint(network: &str, name: &str) -> ApiError {
    ApiError::new(ErrorCode::EndpointNotFound, format!("no endpoint {name} on network {network}"))
}

pub(super) fn bad_address(s: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidAddress, format!("{s:?} is not an IPv4 address"))
}

pub(super) fn bad_address6(s: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidAddress, format!("{s:?} is not an IPv6 address"))
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

pub fn tunnel_off() -> ApiError {
    invalid("the tunnel is off: start vswitchd with --listen ADDR:PORT")
}

pub fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("internal error: {e}"))
}

pub(super) fn setup_error(e: ipam::SetupError) -> ApiError {
    use ipam::SetupError as S;
    let code = match &e {
        S::Ipam(inner) => return ipam_error(inner.clone()),
        S::PoolExhausted { .. } => ErrorCode::PoolExhausted,
        S::SubnetOverlap { .. } => ErrorCode::SubnetOverlap,
        S::BadAux { .. } => ErrorCode::InvalidAddress,
        _ => ErrorCode::InvalidSubnet,
    };
    ApiError::new(code, e.to_string())
}

pub(super) fn ipam_error(e: ipam::IpamError) -> ApiError {
    use ipam::IpamError as I;
    let code = match e {
        I::OutOfRange { .. } | I::Reserved { .. } => ErrorCode::AddressOutOfRange,
        I::Taken { .. } => ErrorCode::AddressTaken,
        I::Exhausted { .. } => ErrorCode::PoolExhausted,
        I::TooSmall { .. } | I::BadGateway { .. } => ErrorCode::InvalidSubnet,
    };
    ApiError::new(code, e.to_string())
}
