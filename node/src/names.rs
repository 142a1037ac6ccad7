//! Header names the gateway sets on responses and upstream requests. As `HeaderName` constants they go into
//! a map without a copy; a `&str` name that is not one of `http`'s standard headers is copied on every insert.

use http::HeaderName;

pub const X_TOLLGATE_NODE: HeaderName = HeaderName::from_static("x-tollgate-node");
pub const X_TOLLGATE_OVERHEAD_US: HeaderName = HeaderName::from_static("x-tollgate-overhead-us");
pub const X_TOLLGATE_TARGET: HeaderName = HeaderName::from_static("x-tollgate-target");
/// The caller's parameters a translation could not carry to the target's API (comma-separated).
pub const X_TOLLGATE_DROPPED_PARAMS: HeaderName = HeaderName::from_static("x-tollgate-dropped-params");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
pub const X_RATELIMIT_LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
pub const X_RATELIMIT_REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
pub const X_RATELIMIT_RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
pub const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
