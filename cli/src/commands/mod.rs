//! One module per group of subcommands.

pub mod account;
pub mod audit;
pub mod fetch;
pub mod share;
pub mod vault;
pub mod webhook;
