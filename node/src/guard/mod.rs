//! Guardrails: local detectors for prompt injection and for PII and secrets, shared by the request path and
//! by an offline `tollgate guard scan`.
//!
//! - [`InjectionDetector`] scores a text in [0, 1] from pattern families after undoing obfuscation
//!   (`normalize`, `decode`, `injection_rules`).
//! - [`PiiDetector`] finds and rewrites PII and secrets (`pii_rules`, `checksum`); [`StreamRedactor`] does the
//!   same on text arriving in chunks, holding back a bounded tail.
//! - [`Guardrail`] is one `[[guardrails]]` entry ([`GuardrailConfig`]) with its detector built.
//!
//! Nothing here does I/O or knows about HTTP: the request-path phase that applies a guardrail's action
//! (block, flag, redact) is built on these types.

pub mod checksum;
pub mod config;
pub mod decode;
pub mod guardrail;
pub mod injection;
pub mod injection_rules;
pub mod normalize;
pub mod pii;
pub mod pii_rules;
pub mod stream;

pub use config::{EntityKind, GuardConfigError, GuardrailAction, GuardrailConfig, GuardrailKind, Replacement};
pub use guardrail::{Check, Guardrail};
pub use injection::{InjectionDetector, InjectionVerdict, RuleMatch};
pub use pii::{Entity, EntitySpan, PiiDetector, Redacted};
pub use stream::StreamRedactor;
