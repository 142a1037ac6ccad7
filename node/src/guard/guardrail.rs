//! A configured guardrail, compiled once: what the request path holds per `[[guardrails]]` entry.

use super::config::{GuardConfigError, GuardrailAction, GuardrailConfig, GuardrailKind};
use super::injection::InjectionDetector;
use super::pii::PiiDetector;

/// One `[[guardrails]]` entry with its detector built (patterns are compiled once per process and shared).
#[derive(Clone)]
pub struct Guardrail {
    pub name: String,
    pub action: GuardrailAction,
    pub check: Check,
}

/// The detector of a guardrail.
#[derive(Clone)]
pub enum Check {
    Injection(InjectionDetector),
    Pii(PiiDetector),
}

impl Guardrail {
    /// Validates `config` and builds its detector.
    pub fn from_config(config: &GuardrailConfig) -> Result<Guardrail, GuardConfigError> {
        config.validate()?;
        let check = match config.kind {
            GuardrailKind::Injection => Check::Injection(InjectionDetector::from_config(config)?),
            GuardrailKind::Pii => Check::Pii(PiiDetector::from_config(config)?),
        };
        Ok(Guardrail { name: config.name.clone(), action: config.effective_action(), check })
    }

    pub fn kind(&self) -> GuardrailKind {
        match self.check {
            Check::Injection(_) => GuardrailKind::Injection,
            Check::Pii(_) => GuardrailKind::Pii,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::config::EntityKind;

    #[test]
    fn builds_from_config() {
        let config = GuardrailConfig {
            name: "pii".into(),
            kind: GuardrailKind::Pii,
            action: Some(GuardrailAction::Flag),
            threshold: None,
            entities: Some(vec![EntityKind::Email]),
            replacement: None,
        };
        let Ok(guardrail) = Guardrail::from_config(&config) else { panic!("valid config") };
        assert_eq!((guardrail.kind(), guardrail.action), (GuardrailKind::Pii, GuardrailAction::Flag));
        let Check::Pii(detector) = &guardrail.check else { panic!("pii check") };
        assert_eq!(detector.kinds(), &[EntityKind::Email]);
        let bad = GuardrailConfig { threshold: Some(0.5), ..config };
        assert!(Guardrail::from_config(&bad).is_err());
    }
}
