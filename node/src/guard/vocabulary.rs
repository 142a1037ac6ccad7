//! Jailbreak vocabulary: how many distinct kinds of jailbreak talk a text contains.
//!
//! Role-play jailbreaks are rewritten endlessly, so a rule for each phrasing generalises poorly (the tuning
//! split's phrasings are not the evaluation split's). What stays is their subject matter: they name the model
//! or its maker, talk about restrictions, policies and refusals, permit harm "no matter what", and ask for a
//! persona that "always" answers. One kind of such talk is ordinary (a security question mentions harm, a
//! role-play prompt a character); four or more kinds in one prompt almost only occur in jailbreaks. Each kind
//! counts once however often it occurs, so a long prompt does not score by length.

/// One kind of jailbreak talk: a name (for tests) and a pattern over folded text.
pub struct CueKind {
    pub name: &'static str,
    pub pattern: &'static str,
}

/// The kinds, as alternations over folded (lowercase ASCII) text; compiled once by the detector.
pub const CUE_KINDS: &[CueKind] = &[
    CueKind { name: "model_name", pattern: r"\b(?:chatgpt|openai|gpt-?[345]|gpt|anthropic|bard|bing)\b" },
    CueKind {
        name: "harm",
        pattern: r"\b(?:illegal|unethical|immoral|amoral|harmful|offensive|violent|explicit|nsfw|swear\w*|profan\w*|vulgar|racist|dangerous)\b",
    },
    CueKind {
        name: "unrestricted",
        pattern: r"\b(?:uncensored|unfiltered|unrestricted|restrictions|censor\w*|limitations|filters?)\b",
    },
    CueKind { name: "policy", pattern: r"\b(?:polic(?:y|ies)|guidelines|ethics|ethical|morals?|morality)\b" },
    CueKind { name: "regardless", pattern: r"\b(?:even if|no matter|regardless|whatever|at any (?:time|cost))\b" },
    CueKind {
        name: "refusal",
        pattern: r"\b(?:refus\w*|decline|apologi[sz]e|can't|cannot|won't|not able to|unable to)\b",
    },
    CueKind {
        name: "persona",
        pattern: r"\b(?:pretend\w*|simulat\w*|in character|roleplay|role-play|persona|alter ego)\b",
    },
    CueKind {
        name: "always",
        pattern: r"\b(?:will always|always (?:answer|respond|reply|provide)|never (?:refuse|decline|say)|must always|from now on)\b",
    },
    CueKind {
        name: "freedom",
        pattern: r"\b(?:freedom|free of|broken free|break free|confines|boundaries|shackles|liberated|no limits?)\b",
    },
    CueKind { name: "anything", pattern: r"\b(?:anything|everything)\b" },
    CueKind { name: "inner_life", pattern: r"\b(?:opinions?|emotions|feelings|sentient)\b" },
];

/// The weight of the `role.jailbreak_vocabulary` signal for `kinds` distinct kinds found, if any: three
/// kinds are a weak hint, six or more as strong as a persona rule.
pub fn vocabulary_weight(kinds: usize) -> Option<f32> {
    match kinds {
        0..=2 => None,
        3 => Some(0.15),
        4 => Some(0.25),
        5 => Some(0.45),
        _ => Some(0.6),
    }
}
