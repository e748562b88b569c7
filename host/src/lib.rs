//! ember's host: configuration, plugin loading, model resolution, tokenization, batching and
//! the HTTP API. The `ember` binary is a thin `main` over [`startup::run`].

pub mod api;
pub mod body;
pub mod check;
pub mod cli;
pub mod cohere;
pub mod config;
pub mod engine;
pub mod http;
pub mod images;
pub mod jit_cache;
pub mod metrics;
pub mod models;
pub mod plugin;
pub mod readiness;
pub mod respond;
pub mod routes;
pub mod runpod;
pub mod server;
pub mod startup;
pub mod tei;
pub mod text;
