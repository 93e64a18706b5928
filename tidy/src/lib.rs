//! No code: the checks are in `tests/architecture.rs`, so that `cargo nextest run --workspace` runs them and
//! a change that makes ARCHITECTURE.md untrue fails like any other test.
