//! Integration tests: one binary, real servers on free loopback ports.

// Helpers are `pub` for sibling modules of this test binary.
#![allow(unreachable_pub)]

mod support;

mod apply;
mod auth_compat;
mod compat;
mod daemon;
mod data_faults;
mod export;
mod feast_reads_tern;
mod ghz_kit;
mod http_api;
mod kubernetes_auth;
mod limits;
mod materialize;
mod object_registry;
mod oidc;
mod prevent_destroy;
mod redis_cluster;
mod redis_delete;
mod redis_store;
mod redis_support;
mod redis_writer;
mod registry;
mod reload;
mod serving;
mod sql_registry;
mod sql_registry_write;
mod sqlite_store;
mod tls;
mod writes;
