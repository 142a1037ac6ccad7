//! Tollgate node: a gateway that proxies, translates and meters OpenAI and Anthropic traffic.
//!
//! `main.rs` only parses flags and calls [`run`]; tests call the same function (or [`RunningNode::start`])
//! on port 0. The request path is laid out phase by phase in [`proxy`].

#![forbid(unsafe_code)]

pub mod accept;
pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod api;
pub mod auth;
pub mod background;
pub mod budget;
pub mod canary;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod connection;
pub mod control;
pub mod dev;
pub mod error;
pub mod fuzzing;
pub mod gateway;
pub mod gossip;
pub mod guard;
pub mod health;
pub mod idle_spin;
pub mod metrics;
pub mod names;
pub mod otlp_queue;
pub mod protocol;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod signals;
pub mod sse;
pub mod status_history;
pub mod telemetry;
pub mod tls_listen;
pub mod tokens;
pub mod trace_span;
pub mod translate;

pub use config::Config;
pub use server::{run, Listeners, RunningNode};
