//! The checkers' result and input types (a leaf: every checker file uses them).

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub verdict: Verdict,
    /// One line with the numbers.
    pub summary: String,
    /// The first violating operations or samples (empty on PASS).
    pub evidence: Vec<Value>,
}

impl CheckResult {
    pub fn new(name: &str, verdict: Verdict, summary: String, evidence: Vec<Value>) -> Self {
        CheckResult { name: name.to_owned(), verdict, summary, evidence }
    }
}

/// Ground truth for one org, from its mock upstream.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub org: String,
    pub limit: Option<u64>,
    pub input: u64,
    pub output: u64,
}

impl Served {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}
