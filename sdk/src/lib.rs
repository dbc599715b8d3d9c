//! canup-sdk: write a canup step in Rust.
//!
//! A step is a small crate built for `wasm32-wasip2` that calls [`export_step!`]. It reaches
//! the machine only through this crate's modules ([`exec`], [`fs`], [`http`], [`database`],
//! [`ui`], [`context`]), each checked by canup against the step's declared capabilities and the
//! operator's policy. [`helpers`] holds the edits release notes ask for again and again.
//! See `sdk/README.md` for the step author's guide.

/// The generated bindings. Public only because [`export_step!`] expands in the step's crate
/// and names them; steps use the modules below, which keep the generated types out of their
/// API.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
        default_bindings_module: "canup_sdk::bindings",
    });
}

pub mod context;
pub mod database;
pub mod detect;
pub mod exec;
pub mod fs;
pub mod helpers;
pub mod http;
pub mod resync;
pub mod ui;

pub use bindings::canup::step::types::ErrorKind;
pub use context::Context;
/// `Context` speaks in `semver::Version`s: the crate is re-exported so that a step needs no
/// dependency of its own to compare them.
pub use semver;

/// A step's failure: one message for the operator, naming what failed and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: Option<ErrorKind>,
    pub message: String,
}

impl Error {
    pub fn msg(message: impl Into<String>) -> Self {
        Self { kind: None, message: message.into() }
    }

    /// True when canup refused the call (capability not declared or not allowed).
    pub fn is_denied(&self) -> bool {
        self.kind == Some(ErrorKind::Denied)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == Some(ErrorKind::NotFound)
    }

    /// Prefixes the message with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        Self { kind: self.kind, message: format!("{what}: {}", self.message) }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<bindings::canup::step::types::Error> for Error {
    fn from(e: bindings::canup::step::types::Error) -> Self {
        Self { kind: Some(e.kind), message: e.message }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::msg(message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an error message, like `anyhow::bail!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*))) };
}

/// Exports a step. Either one function for the whole module:
///
/// ```ignore
/// canup_sdk::export_step!(run);
/// fn run(ctx: &canup_sdk::Context) -> canup_sdk::Result<()> { Ok(()) }
/// ```
///
/// or several steps sharing one module (one crate per release), chosen by step id:
///
/// ```ignore
/// canup_sdk::export_step! {
///     "3.39.0/enable-fifo" => enable_fifo,
///     "3.39.0/unbind-che" => unbind_che,
/// }
/// ```
#[macro_export]
macro_rules! export_step {
    ($run:path) => {
        $crate::export_step!(@export |ctx: &$crate::Context| $run(ctx));
    };
    ($($id:literal => $run:path),+ $(,)?) => {
        $crate::export_step!(@export |ctx: &$crate::Context| match ctx.step_id.as_str() {
            $($id => $run(ctx),)+
            other => ::core::result::Result::Err($crate::Error::msg(::std::format!(
                "this module does not implement step {other:?}; it implements {}",
                [$($id),+].join(", ")
            ))),
        });
    };
    (@export $body:expr) => {
        struct __CanupStep;
        impl $crate::bindings::Guest for __CanupStep {
            fn run() -> ::core::result::Result<(), ::std::string::String> {
                let ctx = $crate::context::get();
                let run: fn(&$crate::Context) -> $crate::Result<()> = $body;
                run(&ctx).map_err(|e| e.to_string())
            }
        }
        $crate::bindings::__export_step_world!(__CanupStep with_types_in $crate::bindings);
    };
}
