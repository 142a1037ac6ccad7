//! Guardrails: local detectors for prompt injection and for PII and secrets, shared by the request path and
//! by `tollgate guard scan`, so a configuration can be tried offline against exactly what the gateway runs.
//!
//! - [`InjectionDetector`] scores a text in [0, 1] from pattern families after undoing obfuscation
//!   (`normalize`, `decode`, `injection_rules`, `vocabulary`).
//! - [`PiiDetector`] finds and rewrites PII and secrets (`pii_rules`, `checksum`); [`StreamRedactor`] does the
//!   same on text arriving in chunks, holding back a bounded tail.
//! - [`Guardrail`] is one `[[guardrails]]` entry ([`GuardrailConfig`]) with its detector built.
//! - [`scan`] is `tollgate guard scan`: JSON lines in, JSON lines out.
//!
//! Only `scan` does I/O and nothing here knows about HTTP: the request-path phase that applies a guardrail's
//! action (block, flag, redact) is built on these types. The labelled corpus and the accuracy tests are in
//! tests/data/guard and node/tests/guard_eval.rs.

pub mod checksum;
pub mod config;
pub mod decode;
pub mod guardrail;
pub mod injection;
pub mod injection_rules;
pub mod normalize;
pub mod pii;
pub mod pii_rules;
pub mod scan;
pub mod stream;
pub mod vocabulary;

pub use config::{EntityKind, GuardConfigError, GuardrailAction, GuardrailConfig, GuardrailKind, Replacement};
pub use guardrail::{Check, Guardrail};
pub use injection::{InjectionDetector, InjectionVerdict, RuleMatch};
pub use pii::{Entity, EntitySpan, PiiDetector, Redacted};
pub use stream::StreamRedactor;
