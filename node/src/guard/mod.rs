//! Guardrails: local detectors for prompt injection (and, next, PII and secrets), shared by the request path
//! and by an offline `tollgate guard scan`.
//!
//! - [`InjectionDetector`] scores a text in [0, 1] from pattern families after undoing obfuscation
//!   (`normalize`, `decode`, `injection_rules`).
//!
//! Nothing here does I/O or knows about HTTP: the request-path phase that applies a guardrail's action
//! (block, flag, redact) is built on these types.

pub mod config;
pub mod decode;
pub mod injection;
pub mod injection_rules;
pub mod normalize;

pub use config::{EntityKind, GuardConfigError, GuardrailAction, GuardrailConfig, GuardrailKind, Replacement};
pub use injection::{InjectionDetector, InjectionVerdict, RuleMatch};
