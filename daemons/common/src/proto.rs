//! Generated gRPC types and services of package `rookery.v1` (`proto/rookery/v1/*.proto`),
//! shared by every daemon (servers) and by apid and rookeryctl (clients).
#![allow(
    missing_docs,
    reason = "generated code; the .proto files carry the documentation"
)]
#![allow(clippy::all, reason = "generated code")]
#![allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code carries bare allows"
)]

tonic::include_proto!("rookery.v1");
