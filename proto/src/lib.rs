//! Tollgate's gRPC definitions: Raft RPCs and cluster administration between nodes, generated at build time
//! from `proto/tollgate.proto` with `tonic-prost-build` and `protox` (no `protoc` needed).

#![allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]

pub mod v1 {
    tonic::include_proto!("tollgate.v1");
}
