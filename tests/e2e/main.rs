//! End-to-end tests: the real server binary on loopback, the real CLI as several users.

mod audit;
mod authz;
mod concurrency;
mod crash;
mod diskfull;
mod flow;
mod hostile;
mod notify;
mod openapi;
mod qr;
mod refusals;
mod seal;
mod tamper;
mod webhook;
