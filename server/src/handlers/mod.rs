//! Request handlers, one module per resource.

pub mod accounts;
pub mod audit;
pub mod info;
pub mod records;
pub mod shares;
