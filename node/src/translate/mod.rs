//! Translation between the OpenAI and Anthropic dialects: requests, complete responses and streams.

pub mod request;
pub mod response;
pub mod stream;
