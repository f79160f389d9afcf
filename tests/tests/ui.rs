//! Compile-time rules, as trybuild UI tests: every mistake in `ui/fail` (named after it)
//! has a twin in `ui/pass` showing the right way.
//!
//! To regenerate the expected compiler output after an intended change:
//! `TRYBUILD=overwrite cargo test -p tests --test ui`, then read every changed `.stderr`:
//! the first error must be the intended one, with the custom message where the rule is a
//! trait bound.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
