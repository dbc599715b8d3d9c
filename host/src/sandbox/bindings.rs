//! The host side of `sdk/wit/step.wit`, generated, and how host errors become the contract's
//! error (kind + message).

use crate::capabilities::Denial;
use crate::capabilities::exec::ExecError;
use crate::capabilities::http::HttpError;

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "step",
    imports: { default: async },
    exports: { default: async },
});

pub(super) use self::canup::step as wit;
pub(super) use wit::types::{Error as WitError, ErrorKind};

pub(super) fn wit_error(kind: ErrorKind, message: impl Into<String>) -> WitError {
    WitError { kind, message: message.into() }
}

impl From<Denial> for WitError {
    fn from(d: Denial) -> Self {
        wit_error(ErrorKind::Denied, d.to_string())
    }
}

pub(super) fn io_error(e: std::io::Error, what: &str) -> WitError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::FileTooLarge => ErrorKind::TooLarge,
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory => ErrorKind::Invalid,
        _ => ErrorKind::Failed,
    };
    wit_error(kind, format!("{what}: {e}"))
}

impl From<ExecError> for WitError {
    fn from(e: ExecError) -> Self {
        let kind = match &e {
            ExecError::NotFound { .. } | ExecError::NoCwd(_) | ExecError::NoUser(_) => ErrorKind::NotFound,
            ExecError::OutsideSysroot { .. } => ErrorKind::Denied,
            ExecError::Timeout { .. } => ErrorKind::Timeout,
            _ => ErrorKind::Failed,
        };
        wit_error(kind, e.to_string())
    }
}

impl From<HttpError> for WitError {
    fn from(e: HttpError) -> Self {
        let kind = match &e {
            HttpError::Denied(_) => ErrorKind::Denied,
            HttpError::UnknownEndpoint(_) => ErrorKind::NotFound,
            HttpError::TooLarge { .. } => ErrorKind::TooLarge,
            HttpError::Timeout { .. } => ErrorKind::Timeout,
            _ => ErrorKind::Failed,
        };
        wit_error(kind, e.to_string())
    }
}
