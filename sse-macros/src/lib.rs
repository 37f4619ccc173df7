//! Procedural macros for `sse-runtime`. Use them through `sse_runtime`, which re-exports them.
//!
//! The attributes (`#[sse_topic]`, `#[sse_poll]`) are built in a later step; this crate is the
//! place they will live.
