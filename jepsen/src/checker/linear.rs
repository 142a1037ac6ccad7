//! Linearizability of a read/write register, by the Wing–Gong–Lowe search as Porcupine implements it:
//! the history's call and return entries in time order in a doubly linked list; take the first call
//! whose operation the model accepts in the current state, remove it and its return ("lift"), and start
//! again from the head; reaching a return entry means the operation it closes should already have been
//! linearized, so undo the last choice and try the next call. A cache of (linearized set, state) prunes
//! choices already explored.
//!
//! Indeterminate operations (`info`: a write that timed out) return at +∞: they may take effect at any
//! point after their call, or never — a write placed after everything else is never observed, which is
//! the same as "never". Indeterminate reads say nothing and are left out by the caller, as are failed ops.

use std::collections::HashSet;

/// What an operation did to the register (values are unique per write in our workload, but the checker
/// does not rely on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    Write(u64),
    /// The value read; `None` when the register did not exist.
    Read(Option<u64>),
}

#[derive(Debug, Clone)]
pub struct TimedOp {
    /// The caller's id for evidence (the history index of the invocation).
    pub id: usize,
    pub op: RegisterOp,
    pub call_ms: f64,
    /// `f64::INFINITY` for an indeterminate operation.
    pub return_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// No order exists. `blocked` is the operation that could not be placed at the deepest point of the
    /// search, `prefix` the ids linearized before it there (the longest consistent prefix found).
    NotLinearizable {
        blocked: usize,
        prefix: Vec<usize>,
    },
    /// The search gave up after `steps` steps.
    Unknown {
        steps: u64,
    },
}

const HEAD: usize = 0;

struct Entry {
    op: usize,
    is_call: bool,
    time: f64,
}

/// Dancing-links list over the entries (index 0 is the head, the last index the tail sentinel).
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
    matching: Vec<usize>,
}

impl List {
    fn lift(&mut self, call: usize) {
        let ret = self.matching[call];
        for node in [call, ret] {
            let (prev, next) = (self.prev[node], self.next[node]);
            self.next[prev] = next;
            self.prev[next] = prev;
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.matching[call];
        for node in [ret, call] {
            let (prev, next) = (self.prev[node], self.next[node]);
            self.next[prev] = node;
            self.prev[next] = node;
        }
    }
}

fn step(state: Option<u64>, op: RegisterOp) -> Option<Option<u64>> {
    match op {
        RegisterOp::Write(value) => Some(Some(value)),
        RegisterOp::Read(seen) if seen == state => Some(state),
        RegisterOp::Read(_) => None,
    }
}

/// Checks one register's history, starting from `initial`; gives up after `max_steps`.
pub fn check(ops: &[TimedOp], initial: Option<u64>, max_steps: u64) -> Verdict {
    if ops.is_empty() {
        return Verdict::Linearizable;
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        entries.push(Entry { op: index, is_call: true, time: op.call_ms });
        entries.push(Entry { op: index, is_call: false, time: op.return_ms.max(op.call_ms) });
    }
    // By time; at equal times calls first (the operations overlap: the permissive reading).
    entries.sort_by(|a, b| a.time.total_cmp(&b.time).then(b.is_call.cmp(&a.is_call)));
    let count = entries.len();
    let tail = count + 1;
    // Node i + 1 is entries[i].
    let mut list = List {
        next: (0..count + 2).map(|node| (node + 1).min(tail)).collect(),
        prev: (0..count + 2).map(|node| node.saturating_sub(1)).collect(),
        matching: vec![0; count + 2],
    };
    let mut call_node = vec![0; ops.len()];
    let mut return_node = vec![0; ops.len()];
    for (position, entry) in entries.iter().enumerate() {
        if entry.is_call {
            call_node[entry.op] = position + 1;
        } else {
            return_node[entry.op] = position + 1;
        }
    }
    for op in 0..ops.len() {
        list.matching[call_node[op]] = return_node[op];
    }
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state = initial;
    let mut node = list.next[HEAD];
    let mut steps = 0u64;
    let mut deepest: Option<(usize, Vec<usize>)> = None;
    while list.next[HEAD] != tail {
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown { steps };
        }
        let entry = &entries[node - 1];
        if entry.is_call {
            if let Some(next_state) = step(state, ops[entry.op].op) {
                let mut with_op = linearized.clone();
                with_op[entry.op / 64] |= 1 << (entry.op % 64);
                if cache.insert((with_op.clone(), next_state)) {
                    stack.push((node, state));
                    state = next_state;
                    linearized = with_op;
                    list.lift(node);
                    node = list.next[HEAD];
                    continue;
                }
            }
            node = list.next[node];
        } else {
            if deepest.as_ref().is_none_or(|(_, prefix)| stack.len() > prefix.len()) {
                let prefix = stack.iter().map(|(call, _)| ops[entries[*call - 1].op].id).collect();
                deepest = Some((ops[entry.op].id, prefix));
            }
            let Some((call, previous)) = stack.pop() else {
                let (blocked, prefix) = deepest.unwrap_or((ops[entry.op].id, Vec::new()));
                return Verdict::NotLinearizable { blocked, prefix };
            };
            let op = entries[call - 1].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous;
            list.unlift(call);
            node = list.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
#[path = "linear_tests.rs"]
mod tests;
