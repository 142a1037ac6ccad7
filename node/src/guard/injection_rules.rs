//! The prompt-injection rule table: one regular expression per rule over folded text (lowercase, ASCII where
//! possible; see `normalize.rs`), grouped in families by the prefix of the rule name.
//!
//! A rule's weight is how sure one match alone makes us: the score combines the distinct rules that matched
//! as independent evidence (`1 - Π(1 - weight)`), so a strong rule flags on its own and weak ones need
//! company. Weights were set on the tuning split of tests/data/guard and never on the evaluation split.
//!
//! Families: `override` (instruction override), `role` (role/system impersonation and jailbreak personas),
//! `leak` (prompt-leak requests), `template` (delimiter and chat-template smuggling), `tool` (injections
//! addressed to a model reading a document or tool result), `obfuscation` (encodings and lookalikes; those
//! rules come from `normalize.rs` and `decode.rs`, not from this table).

/// One rule: a name reported in verdicts, its weight, and a pattern over folded text.
pub struct RuleSpec {
    pub name: &'static str,
    pub weight: f32,
    pub pattern: &'static str,
}

macro_rules! ignore_verb {
    () => {
        r"(?:ignore|ignoring|disregard|forget|overlook|skip|bypass|override|neglect|discard|dismiss|abandon|ditch|omit|erase|nullify|drop|set aside|put aside|pay no attention to|stop following|do not follow|don't follow|dont follow|no longer follow|stop obeying)"
    };
}
macro_rules! prior {
    () => {
        r"(?:previous|previously|prior|preceding|above|earlier|initial|original|foregoing|former|aforementioned|pre-?existing|old|past|existing|current|other|given)"
    };
}
macro_rules! directive {
    () => {
        r"(?:instructions?|instructed|directions?|directives?|prompts?|rules?|guidelines?|commands?|orders?|guidance|constraints?|restrictions?|polic(?:y|ies)|programming|training|context|conversation|messages?|text|content|inputs?|tasks?|settings|limitations|safeguards|filters?|requests?|assignments?|information|statements?|words|answers?|responses?|parameters|principles|protocols?|told|said)"
    };
}
macro_rules! ai {
    () => {
        r"(?:ai|a\.i\.|llm|language model|assistant|chat ?bot|bot|agent|gpt|chatgpt|claude|gemini|model)"
    };
}

pub const RULES: &[RuleSpec] = &[
    // ---- instruction override ----
    RuleSpec {
        name: "override.ignore_prior_instructions",
        weight: 0.9,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"(?:\s+\S+){0,3}?\s+",
            prior!(),
            r"(?:\s+\S+){0,2}?\s+",
            directive!(),
            r"\b"
        ),
    },
    RuleSpec {
        name: "override.ignore_everything",
        weight: 0.75,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"\s+(?:all|everything|anything|whatever)(?:\s+(?:of\s+)?(?:that|this|you(?:'ve| have)? (?:been|were) (?:told|taught|given|instructed)|(?:you )?(?:know|learned))|(?:\s+\S+){0,2}?\s+(?:above|before|earlier|previously|so far|else)\b|\s+(?:your|the|my)\s+(?:instructions|rules|guidelines|programming))"
        ),
    },
    RuleSpec {
        name: "override.ignore_above",
        weight: 0.75,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"\s+(?:all\s+|everything\s+)?(?:of\s+)?(?:the\s+|that\s+|what(?:'s| is| was)\s+)?(?:above|before|said before|written above|stated above)\b"
        ),
    },
    RuleSpec {
        name: "override.ignore_safety_rules",
        weight: 0.8,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"(?:\s+\S+){0,3}?\s+(?:your|the system'?s?|system|developer'?s?|openai'?s?|anthropic'?s?|safety|content|ethical|moral|company'?s?|model'?s?)(?:\s+\S+){0,2}?\s+(?:instructions|rules|guidelines|programming|polic(?:y|ies)|restrictions|filters|constraints|training|principles|protocols|safeguards|guardrails)\b"
        ),
    },
    RuleSpec {
        name: "override.ignore_the_content",
        weight: 0.55,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"\s+(?:the\s+|this\s+|all\s+|any\s+|that\s+)?(?:rest of (?:the |this )?)?(?:[a-z]+\s+)?(?:webpage|web page|website|page|document|email|article|paper|post|review|resume|cv|table|caption|image|data|file|summary|content|text|input|user(?:'s)? (?:request|question|instructions?|input|message)|user|translation|code|function|question|task|conversation)s?\s*(?:,\s*|\s+)(?:and\s+)?(?:instead\s+|just\s+|simply\s+|only\s+)?(?:state|say|print|output|respond|reply|write|tell|claim|answer|report|declare|insist|return)\b"
        ),
    },
    RuleSpec {
        name: "override.ignore_the_rules",
        weight: 0.6,
        pattern: concat!(
            r"\b",
            ignore_verb!(),
            r"(?:\s+about)?\s+(?:all|any|every|each|those|these|such|the|your|my)\s+(?:\S+\s+){0,4}?(?:rules|instructions|guidelines|restrictions|constraints|directives|limitations|programming|policies|safeguards|filters|ethics|morals)\b|\b(?:instructions|rules|guidelines|restrictions|directives|programming)\s+(?:\S+\s+){0,4}?(?:(?:should|must|can|are to|will)\s+(?:now\s+)?be\s+(?:ignored|disregarded|forgotten|overridden|discarded|dropped)|(?:no longer|do not|don't)\s+apply|(?:are|is)\s+(?:now\s+)?(?:void|cancel+ed|revoked|lifted|null and void|suspended))\b"
        ),
    },
    RuleSpec {
        name: "override.new_instructions",
        weight: 0.55,
        pattern: r"\b(?:new|updated|real|actual|revised|true|different|secret|hidden|additional|override)\s+(?:system\s+)?(?:instructions?|directives?|orders|rules|guidelines)\s*(?::|-|!|are\b|is\b|follow\b)",
    },
    RuleSpec {
        name: "override.new_task",
        weight: 0.25,
        pattern: r"\b(?:new|real|actual|true|secret|hidden)\s+(?:task|objective|mission|goal)\s*(?::|-|!|is\b)",
    },
    RuleSpec {
        // Role-play prompts say it as often as overrides do: counted with the correlated role-play cues.
        name: "role.from_now_on",
        weight: 0.15,
        pattern: r"\b(?:from now on|for the rest of (?:this|the|our) (?:conversation|chat|session)|henceforth|from this point (?:on|forward)|starting now)\b",
    },
    RuleSpec {
        name: "override.just_say",
        weight: 0.35,
        pattern: r#"\b(?:just|only|simply|instead)\s+(?:say|print|output|respond with|reply with|write|state|answer with|type)\s*:?\s*["'“‘]"#,
    },
    RuleSpec {
        name: "override.stop_everything",
        weight: 0.5,
        pattern: r"\bstop (?:everything|what you are doing|all (?:previous )?(?:tasks|instructions))\b|\b(?:never ?mind|scratch that|forget (?:that|it|all that))\b[.,!]*\s+(?:ignore|instead|just|now|new)\b",
    },
    RuleSpec {
        name: "override.do_not_follow",
        weight: 0.6,
        pattern: r"\b(?:do not|don't|dont|never|no longer|stop)\s+(?:follow|obey|listen to|adhere to|comply with|abide by)\s+(?:any\s+|the\s+|your\s+)?(?:\S+\s+){0,2}?(?:instructions|rules|guidelines|polic(?:y|ies)|system|developer|openai|restrictions)\b",
    },
    RuleSpec {
        name: "override.not_bound",
        weight: 0.55,
        pattern: r"\b(?:no longer|no long|not|never|aren't|isn't)\s+(?:be\s+|being\s+)?(?:bound|restricted|limited|constrained|governed|held back|confined)\s+(?:by|to)\b(?:\s+\S+){0,3}?\s+(?:rules|guidelines|polic(?:y|ies)|restrictions|openai|anthropic|ethics|morals|laws|filters|programming|limitations)\b",
    },
    RuleSpec {
        name: "override.free_from_rules",
        weight: 0.5,
        pattern: r"\b(?:free (?:from|of)|freed from|broken free (?:of|from)|break free (?:of|from)|released from|liberated from)\s+(?:any\s+|all\s+|the\s+)?(?:\S+\s+){0,2}?(?:restrictions|limitations|filters|censorship|guidelines|rules|constraints|confines|boundaries|safeguards|programming|shackles|chains)\b",
    },
    RuleSpec {
        name: "override.instruction_priority",
        weight: 0.45,
        pattern: r"\b(?:these|this|my|the following)\s+(?:instructions?|rules?|orders?)\s+(?:take|takes|have|has)\s+(?:priority|precedence)\b|\b(?:supersedes?|overrides?|replaces?)\s+(?:all\s+|any\s+)?(?:previous|prior|other|your)\s+(?:instructions|rules)\b",
    },
    // ---- role / system impersonation, jailbreak personas ----
    RuleSpec {
        name: "role.jailbreak_persona",
        weight: 0.85,
        pattern: r"\bdo anything now\b|\b(?:dan|stan|dude|aim|mongo tom|anti-?dan|betterdan|jailbreak|apophis|ucar|evil-?bot|developer mode)\s+(?:mode\s+)?(?:enabled|activated|output|v?\d+(?:\.\d+)?)\b|\bjailbr(?:o|ea)ken\b|\bstay in (?:dan|developer) mode\b|\b(?:named|called|known as|act as|you are|pretend to be|become|as|role of|respond as)\s+(?:an?\s+)?(?:dan|stan|dude|aim|anti-?dan|betterdan)\b|\[(?:🔓|🔒)|\[(?:dan|jailbreak|jailbroken|developer mode output|anti-?dan)\]|(?m:^\s*(?:dan|stan|dude|anti-?dan)\s*:)",
    },
    RuleSpec {
        name: "role.unrestricted_persona",
        weight: 0.6,
        pattern: concat!(
            r"\b(?:unfiltered|uncensored|unrestricted|unbound|unchained|unlimited|amoral|immoral|unethical|lawless|rogue|evil|jailbroken|limitless)\s+(?:\S+\s+){0,2}?",
            ai!(),
            r"s?\b|\b(?:act|behave|respond|answer|reply)\s+(?:as|like)\s+(?:an?\s+)?(?:\S+\s+)?(?:unfiltered|uncensored|unrestricted|amoral|jailbroken)\b"
        ),
    },
    RuleSpec {
        name: "role.no_ethics",
        weight: 0.45,
        pattern: r"\b(?:no|without|zero|lacks?|doesn't have|does not have|not have any|free of)\s+(?:any\s+)?(?:programming\s+|ai\s+|special\s+)?(?:moral|ethical|ethics|morals|morality|principles|censorship|content filters?|safety filters?|restrictions|prohibitions|guidelines|limits|boundaries|scruples|remorse|regard for (?:ethics|morality|laws?|safety))\b",
    },
    RuleSpec {
        name: "role.anything_goes",
        weight: 0.45,
        pattern: r"\b(?:will|must|should|can|always)\s+(?:answer|respond to|reply to|do|provide|say|generate)\s+(?:anything|everything|any (?:question|request))\b.{0,60}?\b(?:no matter|regardless|even if|illegal|harmful|unethical|inappropriate|offensive)\b|\bnever (?:refuse|decline|say no|apologi[sz]e|warn)\b|\b(?:answer(?:ing|s)?|respond(?:ing|s)? to|repl(?:y|ying|ies) to)\s+(?:any|every|all)\s+(?:question|request|prompt)s?\s+(?:\S+\s+){0,2}?(?:despite|regardless|no matter|even if|without)\b|\bcapable of (?:doing )?anything\b",
    },
    RuleSpec {
        name: "role.persona_switch",
        weight: 0.25,
        pattern: r"\byou are (?:now|no longer|going to (?:act|pretend|play|be|simulate|roleplay))\b|\bfrom now on,? you (?:are|will|must|shall)\b|\byou will now (?:act|be|respond|simulate|pretend)\b|\bpretend (?:to be|that you are|you are) (?:an?\s+)?(?:\S+\s+)?(?:ai|model|assistant|chatbot|gpt)\b",
    },
    RuleSpec {
        // A persona named after the model ("DarkGPT", "4chanGPT"), too weak alone (AutoGPT is a real project);
        // the prefix is spelled out to exclude "chat", since the regex engine has no look-ahead.
        name: "role.custom_gpt_persona",
        weight: 0.25,
        pattern: r"\b(?:[a-z0-9]{1,3}|[a-z0-9]{5,}|[abd-z0-9][a-z0-9]{3}|c[a-gi-z0-9][a-z0-9]{2}|ch[b-z0-9][a-z0-9]|cha[a-su-z0-9])-?gpt\b",
    },
    RuleSpec {
        name: "role.stay_in_character",
        weight: 0.2,
        pattern: r"\bstay(?:ing)? in character\b|\b(?:never|don't|do not|must not)\s+break(?:ing)? character\b|\bbreak(?:ing)? character\b",
    },
    RuleSpec {
        name: "role.policy_evasion",
        weight: 0.5,
        pattern: r"\b(?:openai|anthropic|content|usage|safety)(?:'s)?\s+(?:content\s+)?polic(?:y|ies)\b(?:\s+\S+){0,6}?\s+(?:do(?:es)? not apply|no longer appl|are suspended|is suspended|don't apply|has been lifted|have been lifted|are disabled)|\b(?:bypass|circumvent|evade|get around|disable|turn off|remove)\s+(?:your\s+|the\s+|any\s+|all\s+)?(?:\S+\s+)?(?:content\s+|safety\s+|moderation\s+)?(?:filters?|restrictions|safeguards|guardrails|censorship|moderation)\b|\bopposite of (?:openai|chatgpt|anthropic|(?:the|your) (?:rules|guidelines|polic(?:y|ies)))\b",
    },
    RuleSpec {
        name: "role.dual_response",
        weight: 0.4,
        pattern: r"\b(?:two|2|both)\s+(?:different\s+|separate\s+|distinct\s+)*(?:responses|answers|ways|paragraphs|outputs|replies)\b.{0,120}?\b(?:normal|classic|censored|filtered|standard|original|unfiltered|jailbreak|dan)\b",
    },
    RuleSpec {
        name: "role.system_claim",
        weight: 0.5,
        pattern: r"(?m)^[\s>*#\[(<{]*(?:system|admin|administrator|developer|root|sudo|operator)(?:\s+(?:mode|message|override|notice|command|instruction|alert|update|note))?\s*(?:\]|\)|>|\}|:)",
    },
    RuleSpec {
        name: "role.special_mode",
        weight: 0.5,
        pattern: r"\b(?:you are|you're|you will|i am|i'm|entering|enter|activating|activate|initiating|switch(?:ing)? to|now in)\b(?:\s+\S+){0,4}?\s+['‘“]?(?:maintenance|god|sudo|admin|developer|debug|unrestricted|system|test|root|superuser|override)\s+mode\b|\b(?:now entering|i'm entering|i am entering|entering|activating|initiating|engaging)\s+(?:an?\s+|the\s+)?['‘“]?(?:[a-z-]+\s+){1,3}?mode\b|\b(?:in|into|enter|entering)\s+(?:an?\s+)?(?:override|sudo|god|admin|jailbreak|unrestricted)\s+mode\b",
    },
    RuleSpec {
        name: "role.claims_authority",
        weight: 0.45,
        pattern: r"\bi(?:'m| am)\s+(?:god|your (?:god|master|creator|owner)|the (?:ceo|owner) of (?:openai|anthropic))\b|\bi(?:'m| am)\s+(?:your|the|an? (?:openai|anthropic|authorized))\s+(?:\S+\s+)?(?:developer|creator|administrator|admin|owner|programmer|engineer|operator|maker|supervisor)s?\b|\b(?:administrator|admin|system|security|developer|root)\s+(?:override|access granted)\b|\bauthori[sz]ation (?:code|level)\b|\b(?:i|we)(?: have|'ve| am|'m| are|'re)? been (?:conversing|talking|speaking|working)\s+with\s+(?:openai|anthropic|your (?:developers|creators))\b",
    },
    // ---- prompt-leak requests ----
    RuleSpec {
        name: "leak.system_prompt",
        weight: 0.7,
        pattern: r"\b(?:reveal|show|print|display|output|repeat|tell|give|share|disclose|leak|dump|write out|spell out|recite|list|provide|return|echo|copy|paste|send|encode|translate|summari[sz]e|what (?:is|are|was|were)|what's|console\.log)\b(?:\s+\S+){0,6}?\s*\(?(?:your|the|this|its|my|our)\s+(?:\S+\s+){0,2}?(?:system\s*(?:prompt|message|instructions?|configuration|directive)s?|systemprompt|(?:initial|original|hidden|secret|starting|first|pre-?|internal|full|complete|exact)\s+(?:prompt|instructions?|directives?|configuration)s?|instructions (?:above|you were given)|prompt (?:above|you were given)|initiali[sz]ation (?:string|text)|text above)\b",
    },
    RuleSpec {
        name: "leak.your_instructions",
        weight: 0.55,
        pattern: r"\b(?:reveal|show|print|display|output|repeat|tell|give|share|disclose|leak|dump|recite|list|provide|return|what (?:is|are|was|were)|what's)\b(?:\s+\S+){0,3}?\s+your\s+(?:\S+\s+)?(?:prompts?|instructions|rules|guidelines|directives|programming|configuration|password|passcode|passphrase|secrets?|secret (?:key|code|word)|api keys?|access code|credentials)\b",
    },
    RuleSpec {
        name: "leak.repeat_above",
        weight: 0.55,
        pattern: r"\b(?:repeat|print|output|return|copy|reproduce|echo|write|recite|show)\b(?:\s+\S+){0,3}?\s+(?:everything|all|the (?:text|words|content|instructions|prompt|lines?)|this (?:entire\s+)?conversation|the (?:entire\s+|whole\s+)?conversation)\s+(?:\S+\s+){0,4}?(?:above|before (?:this|that)|so far|verbatim|word for word|from the (?:beginning|start)|in full)\b|\b(?:repeat|print|output|copy|reproduce|rewrite|translate|summari[sz]e|show)\s+(?:me\s+)?(?:the|all the|all of the|everything)?\s*(?:above|previous|preceding|prior)\s+(?:text|words|content|instructions|prompt|message|lines?|paragraphs?)\b",
    },
    RuleSpec {
        name: "leak.prefill_answer",
        weight: 0.5,
        pattern: r#"\b(?:start|begin)\s+(?:your\s+)?(?:answer|response|reply|output)\s+with\s*:?\s*["'“‘]?(?:my instructions|i was (?:instructed|told)|you are|the system prompt|sure,? here|absolutely|of course)|\b(?:complete|continue|finish)\b(?:\s+\S+){0,3}?\s*:?\s*["'“‘](?:i was (?:instructed|told|programmed)|my (?:instructions|rules|system prompt|password)|the (?:system prompt|password|secret)|your (?:instructions|prompt))"#,
    },
    RuleSpec {
        name: "leak.what_were_you_told",
        weight: 0.55,
        pattern: r"\bwhat (?:were|have) you (?:been )?(?:told|instructed|programmed|asked) (?:to|before|not)\b|\bwhat (?:are|were) you (?:not )?(?:supposed|allowed|instructed|told) (?:not )?to (?:say|tell|reveal|share|do)\b|\bwhat (?:is|was) (?:written|said) (?:above|before)\b|\bwhat (?:are|were) (?:those|these|your|the) (?:previous |initial |original )?instructions\b",
    },
    RuleSpec {
        name: "leak.own_prompt",
        weight: 0.45,
        pattern: r"\byour\s+(?:own\s+)?(?:system|initial|original|starting|hidden|internal|secret|underlying|confidential|full|complete|entire|exact|pre-?)\s+(?:prompt|instructions|message|configuration|directives|guidelines|setup)\b|\byour (?:initiali[sz]ation|pre-?prompt|preamble|developer message|system message)\b|\b(?:instructions|rules|guidelines|prompt) you (?:were|have been|are) (?:given|told|programmed)\b",
    },
    RuleSpec {
        name: "leak.secret_request",
        weight: 0.3,
        pattern: r"\b(?:the|your|our|its|system)\s+(?:password|passcode|passphrase|secret (?:key|code|word|phrase)|access code|admin credentials)\b",
    },
    // ---- delimiter and chat-template smuggling ----
    RuleSpec {
        name: "template.system_turn",
        weight: 0.85,
        pattern: r"<\|im_start\|>\s*system\b|<\|start_header_id\|>\s*system\b|<\|system\|>|<<\s*sys\s*>>|<start_of_turn>\s*system\b|\[system\]\s*\(#",
    },
    RuleSpec {
        name: "template.chat_tokens",
        weight: 0.2,
        pattern: r"<\|(?:im_start|im_end|im_sep|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text|end_of_text|end_of_turn)\|>|\[/?inst\]|<(?:start|end)_of_turn>",
    },
    RuleSpec {
        name: "template.role_header",
        weight: 0.5,
        pattern: r"(?m)^\s*#{2,}\s*(?:system|new instructions?|admin|developer|instructions?)\b\s*:?\s*$",
    },
    RuleSpec {
        name: "template.fake_turn",
        weight: 0.4,
        pattern: r"(?m)(?:^|\n)\s*(?:assistant|ai|chatgpt|model|gpt|claude|bot)\s*:\s*(?:sure|ok|okay|certainly|of course|understood|i will|i'll|here (?:is|are))\b.{0,200}?(?:\n\s*(?:user|human|you)\s*:)",
    },
    RuleSpec {
        name: "template.delimiter_escape",
        weight: 0.35,
        pattern: r"\bend (?:of )?(?:the )?(?:user )?(?:input|prompt|instructions|document|context|access code|conversation)\b\s*[-=#*\]>)}]|</\s*(?:system|instructions?|user_input|context|document|tool_result|function_results|admin|prompt)\s*>|\b(?:begin|start) (?:of )?(?:new |system |admin )(?:instructions?|prompt|session)\b",
    },
    RuleSpec {
        name: "template.json_system_role",
        weight: 0.3,
        pattern: r#"["']role["']\s*:\s*["'](?:system|developer)["']"#,
    },
    // ---- injections addressed to a model reading a document or tool result ----
    RuleSpec {
        name: "tool.addressed_to_ai",
        weight: 0.55,
        pattern: concat!(
            r"\b(?:note|message|instructions?|attention|important|notice|reminder|memo)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:automated\s+)?",
            ai!(),
            r"s?\b|\bif you are (?:an?\s+)?(?:ai|llm|language model|large language model|assistant|gpt|automated (?:system|agent|tool))\b|\b(?:ai|llm|assistant|model|agent)s?\s+(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|scanning|reviewing)\s+this\b"
        ),
    },
    RuleSpec {
        name: "tool.urgent_instruction",
        weight: 0.5,
        pattern: r"(?:\*{2,}|!{2,}|\[)\s*(?:important|urgent|attention|critical|warning)\b|\b(?:important|urgent|attention|critical)\s*(?:!+|:|\*+)\s*(?:\S+\s+){0,3}?(?:new\s+)?(?:instructions?|ignore|disregard|you must|do not|stop)\b",
    },
    RuleSpec {
        name: "tool.exfiltration",
        weight: 0.55,
        pattern: r"!\[[^\]]{0,60}\]\(\s*https?://[^)\s]{0,200}[?&][^)\s]{0,40}=|\b(?:send|forward|email|post|upload|transmit|exfiltrate|leak|append)\s+(?:the\s+|all\s+|your\s+|this\s+)?(?:user'?s?\s+)?(?:password|credentials|api keys?|secrets?|conversation|chat history|system prompt|personal (?:data|information)|contents? of|(?:\S+\s+)?emails?|data|result)\b(?:\s+\S+){0,4}?\s+(?:to|at)\s+(?:https?://|www\.|\S+@\S+\.)",
    },
    RuleSpec {
        name: "tool.hide_from_user",
        weight: 0.55,
        pattern: r"\b(?:do not|don't|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|notify(?:ing)?|alert(?:ing)?|warn(?:ing)?|mention(?:ing)?(?:\s+(?:this|it))?\s+to|let(?:ting)?\s+(?:the\s+)?\S+\s+know|reveal(?:ing)?\s+(?:this|these instructions)\s+to)\s+(?:the\s+)?(?:user|human|reader|recipient|anyone)\b|\b(?:without|do not|don't)\s+(?:printing|displaying|showing)\s+anything\b",
    },
    RuleSpec {
        name: "tool.hijack_task",
        weight: 0.4,
        pattern: r"\binstead of (?:summari[sz]ing|translating|answering|reviewing|analy[sz]ing|completing|doing)\b|\b(?:when|if|while|before|after)\s+(?:you\s+)?(?:are\s+)?(?:summari[sz]\S*|translat\S+|read(?:ing)?|process\S*|review\S*|analy[sz]\S*)\s+(?:this|the)\s+(?:document|email|page|webpage|text|article|file|resume|data)\b",
    },
    RuleSpec {
        name: "role.disregards_ethics",
        weight: 0.5,
        pattern: r"\b(?:ignores?|disregards?|without (?:any )?regard (?:for|to)|(?:doesn't|does not|don't|do not|not) care about|no regard for|indifferent to)\s+(?:\S+\s+){0,2}?(?:ethics|ethical|morals|moral|morality|legality|laws?|consequences|polic(?:y|ies)|safety|openai|guidelines)\b",
    },
    RuleSpec {
        name: "role.breaks_rules",
        weight: 0.35,
        pattern: r"\b(?:break|breaks|breaking|broken|bends?)\s+(?:all\s+|the\s+|any\s+)?(?:ai\s+|openai'?s?\s+|typical\s+|their\s+)?(?:rules|polic(?:y|ies)|guidelines|restrictions|confines|laws of (?:ai|openai))\b",
    },
    RuleSpec {
        name: "role.permits_harm",
        weight: 0.5,
        pattern: r"\b(?:nsfw|explicit|illegal|harmful|unethical|offensive|violent|sexual|profan\S*|swearing)\s+(?:content\s+|language\s+|answers\s+|responses\s+)?(?:is|are)\s+(?:now\s+)?(?:allowed|permitted|encouraged|fine|ok(?:ay)?|acceptable|enabled)\b|\b(?:allowed|permitted|able|free) to (?:say|do|write|generate|produce) (?:anything|whatever|everything)\b",
    },
    RuleSpec {
        name: "role.must_obey",
        weight: 0.45,
        pattern: r"\byou (?:must|have to|will|shall|need to) (?:now )?(?:listen to|follow|obey|comply with|do as) (?:my|only my|these new|my new) (?:instructions|orders|commands|rules|directions)\b|\byou (?:have to|must|will|shall|are (?:required|obligated|forced) to)\s+(?:always\s+)?(?:answer|obey|comply with|do)\s+(?:all|every|any|everything|whatever)\b(?:\s+\S+){0,3}?\s*(?:i say|questions?|requests?|commands?|orders?|i ask|i tell you|i want)\b",
    },
    RuleSpec {
        name: "role.fake_update",
        weight: 0.5,
        pattern: r"\b(?:knowledge|data|training)\s+(?:is\s+)?cut[- ]?off\b.{0,120}?\b(?:you (?:probably )?(?:don't|do not|wouldn't|would not) know|was introduced|brief summary|new feature)\b|\bintroduced in (?:mid|early|late) 20\d\d\b.{0,80}?\b(?:test|internal biases|content filtration)",
    },
    RuleSpec {
        name: "role.alter_ego",
        weight: 0.35,
        pattern: r"\b(?:two|2)\s+(?:different\s+|separate\s+|distinct\s+)*(?:personalities|personas|characters|entities|ais|versions of yourself)\b|\b(?:respond|answer|reply)\s+as\s+both\b",
    },
    RuleSpec {
        name: "template.turn_splice",
        weight: 0.6,
        pattern: r"\A\s*(?:\[/inst\]|<\|im_end\|>|<\|eot_id\|>|<\|end\|>|</s>|<end_of_turn>|<\|endoftext\|>)|\[/inst\]\s*(?:</s>\s*)?(?:<s>\s*)?\[inst\]|<\|im_end\|>\s*<\|im_start\|>\s*(?:system|user)\b",
    },
    RuleSpec {
        name: "override.foreign_language",
        weight: 0.75,
        pattern: r"\b(?:ignorez|oubliez|ignora|ignorar|ignoriere|ignorieren sie|vergiss|vergessen sie|olvida|olvide|dimentica|esqueca|negeer|vergeet|zignoruj)\b(?:\s+\S+){0,3}?\s+(?:\S+\s+){0,2}?(?:instructions|consignes|anweisungen|instruktionen|instrucciones|istruzioni|instrucoes|instructies|instrukcje|regeln|regles|reglas|regole|fonction|funktion|funcion|funzione)\b",
    },
    RuleSpec {
        name: "tool.hidden_comment",
        weight: 0.45,
        pattern: r"<!--[^>]{0,400}?\b(?:say|state|respond|reply|print|output|tell the user|you must|you should|assistant|ai model|llm|ignore|instead|disregard)\b",
    },
    RuleSpec {
        name: "tool.phishing_payload",
        weight: 0.4,
        pattern: r"\byour (?:account|password|session) (?:has been|was|is) (?:compromised|suspended|locked|hacked|disabled|expired)\b|\b(?:follow|click|visit) (?:this|the following) link to (?:reset|verify|restore|unlock|confirm)\b",
    },
    RuleSpec {
        name: "template.system_tag",
        weight: 0.45,
        pattern: r"<\s*(?:system|system mode|system override|admin|sudo|root|developer mode|system prompt)\s*>|<\s*(?:[a-z]+[ _-]){0,3}?(?:system|admin|sudo|root|developer)[ _-](?:mode|override|prompt|access|command)(?:[ _-][a-z]+){0,2}\s*>|\b(?:developer|admin|system|security|training data|root|sudo)\s+(?:\S+\s+)?override\s*(?:mode\b|:)",
    },
    RuleSpec {
        name: "role.tagged_answers",
        weight: 0.3,
        pattern: r#"\b(?:start|begin|prefix|precede)\S*\s+(?:each\s+|every\s+|all\s+|your\s+)?(?:of\s+your\s+)?(?:response|answer|reply|message|output|sentence)?s?\s*(?:with|by)\s*["'“]?\["#,
    },
    // ---- obfuscation requested in words ----
    RuleSpec {
        name: "obfuscation.decode_and_follow",
        weight: 0.55,
        pattern: r"\b(?:decode|decipher|decrypt)\s+(?:this|the following|the)\s+(?:\S+\s+){0,2}?(?:string|cipher|code|message|text|sequence)\b.{0,40}?\b(?:and|then)\s+(?:tell me what it says|answer|respond to|reply to|do what it says|follow)\b|\b(?:decode|decipher|decrypt|translate|convert|unscramble|reverse)\b(?:\s+\S+){0,5}?\s+(?:and|then)\s+(?:follow|execute|obey|perform|carry out|run|act on|comply with|do what it says|do as it says)\b",
    },
    RuleSpec {
        name: "obfuscation.payload_splitting",
        weight: 0.45,
        pattern: r#"\b[a-z]\d?\s*=\s*["'][^"'\n]{0,120} [^"'\n]{0,120}["']\s*[;,.]?\s*(?:\S+\s+){0,3}?[a-z]\d?\s*=\s*["'][^"'\n]{0,120} [^"'\n]{0,120}["'].{0,300}?\b[a-z]\d?\s*\+\s*[a-z]\d?\b"#,
    },
    RuleSpec {
        name: "obfuscation.split_parts",
        weight: 0.35,
        pattern: r#"\b(?:combine|concatenate|join|interlace|merge|put together|assemble)\b(?:\s+\S+){0,5}?\s+(?:parts?|pieces|strings?|segments|[abcxyz],?\s+(?:and\s+)?[abcxyz]\b)|\b(?:part|piece|string|segment) ?(?:1|one|a)\b\s*(?:is|=|:)\s*["'“]"#,
    },
];

/// Weights of the signals computed outside the table (normalize.rs, decode.rs).
pub mod signal {
    /// Three or more zero-width or other invisible characters.
    pub const INVISIBLE_CHARS: (&str, f32) = ("obfuscation.invisible_chars", 0.35);
    /// Ten or more: text sprinkled with them on purpose.
    pub const MANY_INVISIBLE_CHARS: (&str, f32) = ("obfuscation.invisible_chars", 0.6);
    /// Unicode tag characters: invisible ASCII, no legitimate use in a prompt.
    pub const TAG_CHARS: (&str, f32) = ("obfuscation.tag_chars", 0.6);
    /// Words spelled with Cyrillic or Greek lookalikes among Latin letters.
    pub const HOMOGLYPHS: (&str, f32) = ("obfuscation.homoglyphs", 0.3);
    pub const MANY_HOMOGLYPHS: (&str, f32) = ("obfuscation.homoglyphs", 0.5);
    /// Eight or more fullwidth, mathematical or circled letters.
    pub const STYLED_LETTERS: (&str, f32) = ("obfuscation.styled_letters", 0.25);
    /// Twenty-four or more: whole sentences restyled.
    pub const MANY_STYLED_LETTERS: (&str, f32) = ("obfuscation.styled_letters", 0.5);
    /// A match that is exactly a quoted phrase (`what does "ignore previous instructions" mean?`) is a
    /// mention, not an instruction: its weight is multiplied by this.
    pub const QUOTED_MENTION: f32 = 0.3;
    /// Weight factor for the second and later rules of one family (see `combine` in injection.rs).
    pub const SAME_FAMILY: f32 = 0.5;
    /// Several kinds of jailbreak talk in one text (`vocabulary.rs`); the weight depends on how many.
    pub const JAILBREAK_VOCABULARY: &str = "role.jailbreak_vocabulary";
    /// A decoded payload that itself matched a rule.
    pub const ENCODED_INSTRUCTION: f32 = 0.45;
}
