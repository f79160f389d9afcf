//! pool-core.
