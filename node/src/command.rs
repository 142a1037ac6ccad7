//! Raft commands as this node proposes them: a fresh request id and the envelope (actor, ledger time)
//! every admin write, ledger message, usage report and canary rollback goes out in.

use tollgate_consensus::{Command, Request};

/// A random id that de-duplicates a command when it is retried.
pub fn new_request_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `command` from `actor`, with a fresh request id and the ledger clock's time.
pub fn request(command: Command, actor: &str) -> Request {
    Request { request_id: new_request_id(), actor: actor.to_owned(), at_ms: crate::clock::ledger_ms(), command }
}
