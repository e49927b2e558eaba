//! Everything that can go wrong, the message it prints and the exit code it maps to.

use std::path::PathBuf;
use std::process::ExitCode;

use hyper::StatusCode;

use crate::output::pretty_json;

/// Exit codes. 2 (usage) is clap's own, and ours for the few checks clap cannot do.
pub mod exit {
    pub const API_ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
    pub const PERMISSION: u8 = 4;
}

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// vswitchd answered with an [`vswitch::api::ApiError`].
    #[error("{message} ({code})")]
    Api {
        code: String,
        message: String,
        /// The error body, pretty, for `--json`.
        json: String,
    },
    /// vswitchd answered something that is not what the API promises.
    #[error("unexpected answer from vswitchd ({status}): {detail}")]
    BadAnswer { status: StatusCode, detail: String },
    #[error("cannot reach vswitchd at {}: {reason} (is vswitchd running?){}", socket.display(), hint.as_deref().unwrap_or(""))]
    Unreachable { socket: PathBuf, reason: String, hint: Option<String> },
    /// The socket path names a file that is not a socket.
    #[error("{} is not a socket: --socket (or $VSWITCH_SOCKET) must name the control socket of vswitchd", socket.display())]
    NotASocket { socket: PathBuf },
    /// Connected, but the exchange failed (daemon gone mid-request, no answer in time).
    #[error("lost vswitchd at {}: {reason}", socket.display())]
    Transport { socket: PathBuf, reason: String },
    #[error("permission denied on {}: run as root or as the user vswitchd runs as", socket.display())]
    PermissionDenied { socket: PathBuf },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Local(String),
}

impl Failure {
    /// Reads a non-2xx answer. The error code is read as a string so that codes added to the
    /// daemon later (`ErrorCode` is non-exhaustive) still print.
    pub fn from_error_reply(status: StatusCode, body: &[u8]) -> Failure {
        let parsed: Option<(String, String)> = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
            let e = v.get("error")?;
            Some((e.get("code")?.as_str()?.to_string(), e.get("message")?.as_str()?.to_string()))
        });
        match (parsed, pretty_json(body)) {
            (Some((code, message)), Some(json)) => Failure::Api { code, message, json },
            _ => Failure::BadAnswer { status, detail: snippet(body) },
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Api { .. } | Failure::BadAnswer { .. } | Failure::Local(_) => exit::API_ERROR,
            Failure::Usage(_) => exit::USAGE,
            Failure::Unreachable { .. } | Failure::NotASocket { .. } | Failure::Transport { .. } => exit::UNREACHABLE,
            Failure::PermissionDenied { .. } => exit::PERMISSION,
        })
    }
}

/// The start of a body that is not what we expected, printable on one line.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_string();
    }
    let mut s: String = text.chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > 200 {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_is_read_leniently() {
        let body = br#"{"error":{"code":"network_not_found","message":"network net9 not found"}}"#;
        let f = Failure::from_error_reply(StatusCode::NOT_FOUND, body);
        assert_eq!(f.to_string(), "network net9 not found (network_not_found)");
        assert_eq!(f.exit_code(), ExitCode::from(1));

        // A code this client does not know yet.
        let body = br#"{"error":{"code":"brand_new","message":"something new"}}"#;
        assert_eq!(Failure::from_error_reply(StatusCode::CONFLICT, body).to_string(), "something new (brand_new)");

        let f = Failure::from_error_reply(StatusCode::BAD_GATEWAY, b"<html>oops</html>\n");
        assert_eq!(f.to_string(), "unexpected answer from vswitchd (502 Bad Gateway): <html>oops</html>");
        let f = Failure::from_error_reply(StatusCode::INTERNAL_SERVER_ERROR, b"");
        assert_eq!(f.to_string(), "unexpected answer from vswitchd (500 Internal Server Error): empty body");
    }

    #[test]
    fn messages() {
        let f = Failure::Unreachable { socket: "/run/vswitch/vswitchd.sock".into(), reason: "no such file".into(), hint: None };
        assert_eq!(f.to_string(), "cannot reach vswitchd at /run/vswitch/vswitchd.sock: no such file (is vswitchd running?)");
        assert_eq!(f.exit_code(), ExitCode::from(3));
        let f = Failure::PermissionDenied { socket: "/s".into() };
        assert_eq!(f.to_string(), "permission denied on /s: run as root or as the user vswitchd runs as");
        assert_eq!(f.exit_code(), ExitCode::from(4));
    }
}
