//! Tollgate's chaos harness (README: jepsen/): three regions in network namespaces joined by a userspace WAN
//! ([`linkproxy`]), each running a real `tollgate serve` ([`regions`]), and WAN measurements ([`measure`]).

pub mod checker;
pub mod cli;
pub mod history;
pub mod http;
pub mod linkproxy;
pub mod lock;
pub mod measure;
pub mod measure_budget;
pub mod regions;
pub mod run;
